"""Per-rank manifests and the COMMIT record: what they contain and how they are built.

A manifest lists every file one rank wrote (relative path, size, sha256). COMMIT.json, written by
rank 0 once every manifest exists, lists the manifests with their own size and sha256, so a single
file anchors the whole checkpoint: change any byte anywhere and verification fails.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

from unigen.orchestrator.checkpoint.errors import CheckpointError
from unigen.orchestrator.checkpoint.layout import (
    FORMAT,
    UnsafePath,
    is_reserved_name,
    resolve_inside,
)

_CHUNK = 8 * 2**20


def sha256_file(path: Path, *, fsync: bool = False) -> tuple[int, str]:
    """(size, sha256 hex) of a file, read in large chunks (hashlib drops the GIL on big updates, so
    several files hash in parallel threads). With ``fsync`` the file's data is also forced to disk,
    because the writer (torch.save, DeepSpeed) does not, and COMMIT must not outlive its data."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
            size += len(chunk)
        if fsync:
            os.fsync(f.fileno())
    return size, h.hexdigest()


def hash_files(paths: list[Path], *, fsync: bool = False) -> list[tuple[int, str]]:
    """:func:`sha256_file` over many files, in parallel threads, results in input order."""
    workers = min(8, len(paths), os.cpu_count() or 1)
    if workers <= 1:  # 0 when there are no paths, and a pool needs at least one worker
        return [sha256_file(p, fsync=fsync) for p in paths]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ckpt-sha256") as pool:
        return list(pool.map(lambda p: sha256_file(p, fsync=fsync), paths))


def normalise_written(step_dir: Path, written: Iterable[Any], rank: int) -> list[str]:
    """The file list a rank's ``write_fn`` returned, as sorted unique relative POSIX paths.

    Absolute paths inside the step folder and folders (expanded to the files under them) are
    accepted; anything else is a programming error in the caller, reported with the fix.
    """
    if isinstance(written, (str, bytes, os.PathLike)) or written is None:
        raise CheckpointError(
            f"rank {rank}: write_fn must return a list of the file paths it wrote (relative to {step_dir}), "
            f"got {type(written).__name__}")
    root = step_dir.resolve()
    out: set[str] = set()
    for item in written:
        p = Path(item)
        if p.is_absolute():
            try:
                p = p.resolve().relative_to(root)
            except ValueError:
                raise CheckpointError(
                    f"rank {rank}: write_fn returned {str(item)!r}, which is outside the step folder {step_dir}: "
                    "write every file of a checkpoint inside the folder it is given") from None
        rel = p.as_posix()
        try:
            full = resolve_inside(step_dir, rel)  # checks the path itself first
        except UnsafePath as e:
            raise CheckpointError(f"rank {rank}: write_fn returned an unusable path: {e}") from None
        if full.is_dir():
            out.update(f.relative_to(root).as_posix() for f in full.resolve().rglob("*") if f.is_file())
            continue
        if not full.is_file():
            raise CheckpointError(
                f"rank {rank}: write_fn returned {rel!r} but {full} does not exist: return the paths of the files "
                "this rank wrote, relative to the step folder")
        out.add(rel)
    reserved = sorted(r for r in out if is_reserved_name(r))
    if reserved:
        raise CheckpointError(
            f"rank {rank}: write_fn may not write {reserved}: those names belong to the commit protocol")
    return sorted(out)


def build_manifest(step_dir: Path, rels: list[str], *, step: int, rank: int, world_size: int,
                   fsync: bool = True) -> dict[str, Any]:
    sums = hash_files([step_dir / r for r in rels], fsync=fsync)
    files = [{"path": r, "size": size, "sha256": digest} for r, (size, digest) in zip(rels, sums)]
    return {"format": FORMAT, "step": step, "rank": rank, "world_size": world_size, "files": files}


def build_commit(step: int, world_size: int, manifests: list[tuple[str, bytes]], totals: tuple[int, int],
                 metadata: dict[str, Any]) -> dict[str, Any]:
    """The COMMIT record; ``manifests`` are (file name, exact bytes) in rank order."""
    files, nbytes = totals
    return {
        "format": FORMAT,
        "step": step,
        "world_size": world_size,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "manifests": [{"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                      for name, data in manifests],
        "files": files,
        "bytes": nbytes,
        "metadata": metadata,
    }
