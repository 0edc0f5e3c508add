"""Atomic file writes: a reader sees the old content or the new one, never half a file.

The one place for "write a temp file, then ``os.replace``". Here:

- the temp file is ``.<name>.<random>.tmp`` in the target's folder (``os.replace`` is atomic only
  within one filesystem), created exclusively, so concurrent writers never share one;
- on any exception (KeyboardInterrupt included) the temp file is removed and the error re-raised;
  the target is untouched;
- the result has the mode a plain ``open()`` gives, 0o666 & ~umask (and the folder's default ACLs),
  not ``mkstemp``'s 0600, so files colleagues and other jobs read stay readable. The temp file is
  created with ``os.open(..., 0o666)`` rather than ``mkstemp`` + chmod because reading the umask
  (``os.umask``) changes it for every thread of the process for a moment;
- ``fsync=True`` flushes and fsyncs the file before the rename and the folder after it, so the new
  content survives a crash or a power cut. Without it the write is atomic for live readers only.

Standard library only: ``import unigen.orchestrator`` must stay light.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import IO, Iterator

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or a new entry in ``path`` durable (POSIX needs the directory synced too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", *, fsync: bool = False) -> Iterator[IO]:
    """Yield a file to write (``mode`` "w": UTF-8 text, or "wb"); it replaces ``path`` when the block exits cleanly."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, _FLAGS, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if fsync:
        fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = False) -> None:
    with atomic_open(path, "wb", fsync=fsync) as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, fsync: bool = False) -> None:
    with atomic_open(path, "w", fsync=fsync) as fh:
        fh.write(text)
