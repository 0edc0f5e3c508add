"""Error types for mistakes a user can fix.

``UserError`` (a ValueError) is what the CLI turns into one ``error: ...`` line and a non-zero exit;
its message names the file, field or run and says what to do. Anything else escaping to the CLI is
a bug and keeps its traceback. Already used by orchestrator/runs.py: keep the name.
"""


class UserError(ValueError):
    """A mistake in the user's input (recipe, profile, override, run reference, ...)."""
