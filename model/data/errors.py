"""Error types of the data package.

``DataError`` is a ValueError so the CLI reports it as one ``error: ...`` line: every message names the
source (and where it helps the record key, file or recipe field) and says what to do.
``BadRecord`` is internal: a reader or adapter raises it for one unusable record, the loader catches it,
counts it against the source and serves a deterministic replacement.
"""
from __future__ import annotations


class DataError(ValueError):
    """A data problem the run cannot continue past (bad fraction over the limit, a source that cannot
    be read, a field mapping that does not match the files)."""


class BadRecord(Exception):
    """One record cannot be used (undecodable image, missing field, wrong type, truncated shard)."""

    def __init__(self, reason: str, key: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.key = key

    def with_key(self, key: str) -> "BadRecord":
        """The same error, tagged with the record key when the raiser did not know it."""
        if self.key is None:
            self.key = key
        return self
