"""The checkpoint error type."""
from unigen.orchestrator.errors import UserError


class CheckpointError(UserError):
    """A checkpoint could not be written, verified or loaded. The message names the checkpoint
    folder(s) and why; runbooks/checkpoint-recovery.md says how to recover by hand. It is a
    ``UserError`` so the CLI reports it as one line instead of a traceback."""
