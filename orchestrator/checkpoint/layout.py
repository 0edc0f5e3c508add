"""Names on disk, safe relative paths, and crash-safe small writes.

::

    <checkpoints>/step-<N>/            one checkpoint: the ranks' files (any sub-folders), plus
        manifest-rank<r>.json          what rank r wrote: relative path, size, sha256 of each file
        COMMIT.json                    written last, by rank 0: the checkpoint exists only with it
    <checkpoints>/LATEST               "step-<N>": a pointer for people and tools, never trusted alone
    <checkpoints>/latest, zero_to_fp32.py  DeepSpeed's pointer and script (deepspeed_tools.py), so its
                                       documented ``python zero_to_fp32.py . out`` works here
    <checkpoints>/quarantine/          torn or corrupt checkpoints moved aside by a resume
    <checkpoints>/.incoming-*, .trash-*  downloads in progress and deletions in progress (ignored)

A remote copy (``checkpoint.uri``) has the same layout under its prefix.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from unigen.orchestrator.atomic import atomic_write_bytes as _atomic_write_bytes

FORMAT = "unigen.checkpoint/1"
COMMIT_NAME = "COMMIT.json"
LATEST_NAME = "LATEST"
QUARANTINE_DIR = "quarantine"
INCOMING_PREFIX = ".incoming-"
TRASH_PREFIX = ".trash-"

_STEP_RE = re.compile(r"^step-(\d+)$")
_MANIFEST_RE = re.compile(r"^manifest-rank(\d+)\.json$")


def step_dir_name(step: int) -> str:
    return f"step-{int(step)}"


def parse_step_dir(name: str) -> int | None:
    """The step of a ``step-<N>`` folder name, or None for anything else."""
    m = _STEP_RE.match(name)
    return int(m.group(1)) if m else None


def manifest_name(rank: int) -> str:
    return f"manifest-rank{int(rank)}.json"


def is_reserved_name(rel: str) -> bool:
    """Names the protocol writes itself; a rank's data file may not use them."""
    return rel == COMMIT_NAME or bool(_MANIFEST_RE.match(rel))


class UnsafePath(ValueError):
    """A relative path that is absolute, empty, or climbs out of its checkpoint folder."""


def check_relpath(rel: Any) -> str:
    """``rel`` normalised to a POSIX relative path that stays inside its folder, or UnsafePath.

    Manifests come from disk or from a bucket, so they are untrusted input: a path like
    ``../../.ssh/authorized_keys`` must never become a file name on download or a file read on verify.
    """
    if not isinstance(rel, str) or not rel:
        raise UnsafePath(f"path {rel!r} is not a non-empty string")
    if "\x00" in rel or "\\" in rel:
        raise UnsafePath(f"path {rel!r} contains a NUL or backslash")
    if rel.startswith("/") or re.match(r"^[A-Za-z]:", rel):
        raise UnsafePath(f"path {rel!r} is absolute")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UnsafePath(f"path {rel!r} escapes the checkpoint folder or is not normalised")
    return rel


def resolve_inside(root: Path, rel: str) -> Path:
    """``root / rel`` after :func:`check_relpath`, refusing a result that symlinks out of ``root``."""
    check_relpath(rel)
    path = root / rel
    real_root = root.resolve()
    real = path.resolve()
    if real != real_root and real_root not in real.parents:
        raise UnsafePath(f"path {rel!r} leads outside the checkpoint folder (through a symlink)")
    return path


# -- crash-safe writes ----------------------------------------------------------------------------
def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old content or the new one, never a mix, even
    across a crash or a power cut: temp file in the same folder, fsync, os.replace, fsync folder."""
    _atomic_write_bytes(path, data, fsync=True)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON with sorted keys."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
