"""The MLflow-down buffer on disk: ``<run_dir>/tracking/spool.jsonl``.

One JSON object per line, one tracking call ("op") each, in the order they were made. Lines are only
appended while MLflow is unreachable, and the whole file is replayed, in order, once it answers again:
by the live attempt's background sender, by the next attempt's ``Tracker.open``, or by ``unigen runs
--sync``. An advisory lock serialises those writers, so a sync and a live attempt never interleave.

A process killed in the middle of an append leaves a torn last line; readers skip it (the op is lost,
nothing else is).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

from unigen.orchestrator.atomic import atomic_write_text
from unigen.orchestrator.tracking.state import tracking_dir

log = logging.getLogger("unigen.tracking")

SPOOL_NAME = "spool.jsonl"


def spool_path(run_dir: str | os.PathLike[str]) -> Path:
    return tracking_dir(run_dir) / SPOOL_NAME


def _lines(ops: list[dict[str, Any]]) -> str:
    """``ops`` as spool lines: compact JSON, one op a line."""
    return "".join(json.dumps(op, separators=(",", ":"), allow_nan=True) + "\n" for op in ops)


class Spool:
    """Append-only list of pending tracking ops for one run (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the spool's lock (re-entrant use from one thread is not supported)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def append(self, ops: list[dict[str, Any]]) -> None:
        """Add ``ops`` at the end. The caller holds no lock; this takes it."""
        if not ops:
            return
        text = _lines(ops)
        with self.locked(), open(self.path, "a", encoding="utf-8") as fh:  # closed (flushed) before the unlock
            fh.write(text)

    def read(self) -> list[dict[str, Any]]:
        """Every intact op, oldest first (call with the lock held when you will rewrite after)."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        ops = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                ops.append(json.loads(line))
            except json.JSONDecodeError:
                # Only a torn last line is expected (a kill mid-append); say so if it is elsewhere.
                where = "last line" if number == len(lines) else f"line {number}"
                log.warning("tracking spool %s: %s is not JSON; skipped", self.path, where)
        return ops

    def rewrite(self, ops: list[dict[str, Any]]) -> None:
        """Replace the content with ``ops`` atomically (removes the file when empty). Lock held."""
        if not ops:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        atomic_write_text(self.path, _lines(ops))

    def pending(self) -> int:
        """How many ops wait in the file (0 when it does not exist)."""
        try:
            with open(self.path, encoding="utf-8") as fh:
                return sum(1 for line in fh if line.strip())
        except FileNotFoundError:
            return 0
