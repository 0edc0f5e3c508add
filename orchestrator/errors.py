"""Error types for mistakes a user can fix.

``UserError`` (a ValueError) is what the CLI turns into ``error: ...`` lines and a non-zero exit; its
message names the file, field or run and says what to do. Anything else escaping to the CLI is a bug
and keeps its traceback.

``ConfigError`` carries every problem found in a recipe, a profile and the overrides of one command at
once (a user fixes them in one round); ``str()`` of it is one line per problem.
"""
from __future__ import annotations

from dataclasses import dataclass


class UserError(ValueError):
    """A mistake in the user's input (recipe, profile, override, run reference, ...)."""


@dataclass(frozen=True)
class Problem:
    """One problem at one place: ``source`` (a file, or ``override 'k=v'``), its 1-based ``line`` when
    the YAML gives one, the dotted ``path`` of the field ('' for the whole document) and the message."""

    source: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(UserError):
    """Every problem found in the inputs of one command, one line each."""

    def __init__(self, problems: list[Problem]):
        assert problems, "ConfigError needs at least one problem"
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))
