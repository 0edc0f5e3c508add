"""The commit protocol of one save, as run by every rank.

    rank 0: prepare step-<N>/ (set a torn leftover aside)   -> broadcast   (all wait for the folder)
    all:    write_fn(step_dir) -> manifest-rank<r>.json     -> all_reduce  (barrier; any failure?)
    rank 0: COMMIT.json, then LATEST                        -> broadcast   (barrier; commit ok?)

Each collective carries the outcome of the phase before it, so a failure on any rank makes every
rank raise CheckpointError together instead of leaving the others waiting in a barrier forever.
COMMIT.json and LATEST are each replaced atomically, and a checkpoint counts only with its COMMIT,
so a crash at any moment leaves the previous checkpoint or the new one as the newest valid one.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from unigen.orchestrator.checkpoint.errors import CheckpointError
from unigen.orchestrator.checkpoint.layout import COMMIT_NAME, atomic_write_json, manifest_name
from unigen.orchestrator.checkpoint.local import LocalStore
from unigen.orchestrator.checkpoint.manifest import build_commit, build_manifest, normalise_written
from unigen.orchestrator.comm import Comm
from unigen.orchestrator.secrets import scrub

WriteFn = Callable[[Path], list]


@dataclass
class CheckpointInfo:
    """A committed checkpoint, as returned by ``save`` (timings filled) and ``resume``."""

    step: int
    path: str
    world_size: int
    metadata: dict[str, Any]
    committed_at: str | None = None
    source: str = "saved"  # "saved" | "local" | "remote" | "existing"
    files: int = 0
    bytes: int = 0
    blocked_s: float = 0.0  # how long save() held the caller (the training step)
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_commit(cls, path: Path, commit: dict[str, Any], source: str) -> "CheckpointInfo":
        return cls(step=commit["step"], path=str(path), world_size=commit["world_size"],
                   metadata=commit.get("metadata") or {}, committed_at=commit.get("time"), source=source,
                   files=commit.get("files", 0), bytes=commit.get("bytes", 0))


def _clean_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """JSON-round-tripped metadata with any known secret value scrubbed out of it."""
    if not isinstance(metadata, dict):
        raise CheckpointError(f"save(metadata=...) must be a dict, got {type(metadata).__name__}")
    try:
        text = json.dumps(metadata, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"save(metadata=...) must be JSON-serialisable: {e}") from None
    return json.loads(scrub(text))


def _prepare(store: LocalStore, step: int, metadata: dict[str, Any]) -> tuple[str, Any]:
    """Rank 0: ("existing", commit) when step-N is already committed, ("ready", metadata) otherwise."""
    path = store.step_dir(step)
    commit_file = path / COMMIT_NAME
    if commit_file.is_file():
        return "existing", json.loads(commit_file.read_text())
    clean = _clean_metadata(metadata)
    if path.exists():
        store.quarantine(path, f"uncommitted leftover replaced by a new save of step {step}")
    path.mkdir(parents=True)
    return "ready", clean


def _write_rank(step_dir: Path, write_fn: WriteFn, *, step: int, rank: int, world_size: int,
                fsync: bool, timings: dict[str, float]) -> None:
    if not step_dir.is_dir():
        raise CheckpointError(f"rank {rank} does not see {step_dir}, which rank 0 created: the checkpoints "
                              "folder must be on a filesystem that all ranks (all nodes) share")
    t = time.monotonic()
    rels = normalise_written(step_dir, write_fn(step_dir), rank)
    timings["write_s"] = time.monotonic() - t
    t = time.monotonic()
    manifest = build_manifest(step_dir, rels, step=step, rank=rank, world_size=world_size, fsync=fsync)
    atomic_write_json(step_dir / manifest_name(rank), manifest)
    timings["manifest_s"] = time.monotonic() - t


def _commit(store: LocalStore, step: int, world_size: int, metadata: dict[str, Any]) -> dict[str, Any]:
    """Rank 0, after every rank wrote its manifest: COMMIT.json, then LATEST."""
    step_dir = store.step_dir(step)
    manifests, files, nbytes = [], 0, 0
    for rank in range(world_size):
        path = step_dir / manifest_name(rank)
        if not path.is_file():
            raise CheckpointError(
                f"{path} is missing after every rank reported success: the checkpoints folder must be on a "
                "filesystem that all ranks (all nodes) share")
        data = path.read_bytes()
        entries = json.loads(data)["files"]
        files += len(entries)
        nbytes += sum(e["size"] for e in entries)
        manifests.append((path.name, data))
    commit = build_commit(step, world_size, manifests, (files, nbytes), metadata)
    atomic_write_json(step_dir / COMMIT_NAME, commit)
    store.write_latest(step)
    return commit


def save_collective(store: LocalStore, comm: Comm, step: int, write_fn: WriteFn, metadata: dict[str, Any], *,
                    fsync: bool = True) -> CheckpointInfo:
    """Run one save on this rank (all ranks call it together); see the module docstring."""
    if not isinstance(step, int) or step < 0:
        raise CheckpointError(f"save(step={step!r}): the step must be a non-negative integer")
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    step_dir = store.step_dir(step)

    prepared: tuple[str, Any] = ("", None)
    if comm.rank == 0:
        try:
            prepared = _prepare(store, step, metadata)
        except Exception as e:
            prepared = ("error", scrub(str(e)))
    state, payload = comm.broadcast_object(prepared, src=0)
    if state == "error":
        raise CheckpointError(f"cannot save step {step}: {payload}")
    if state == "existing":
        info = CheckpointInfo.from_commit(step_dir, payload, source="existing")
        info.blocked_s = time.monotonic() - t0
        return info

    error: BaseException | None = None
    try:
        _write_rank(step_dir, write_fn, step=step, rank=comm.rank, world_size=comm.world_size, fsync=fsync,
                    timings=timings)
    except Exception as e:
        error = e
    t = time.monotonic()
    any_failed = comm.all_reduce_any(error is not None)
    timings["wait_s"] = time.monotonic() - t
    if any_failed:
        if comm.rank == 0:
            with contextlib.suppress(OSError):  # keep the original error; the next resume quarantines it anyway
                store.quarantine(step_dir, f"save of step {step} failed on at least one rank")
        if error is not None:
            raise CheckpointError(f"rank {comm.rank} could not write step {step}: {scrub(str(error))}") from error
        raise CheckpointError(f"step {step} was not saved: another rank failed to write its files (see its log)")

    t = time.monotonic()
    outcome: tuple[str, Any] = ("", None)
    if comm.rank == 0:
        try:
            outcome = ("ok", _commit(store, step, comm.world_size, payload))
        except Exception as e:
            with contextlib.suppress(OSError):
                store.quarantine(step_dir, f"commit of step {step} failed: {e}")
            outcome = ("error", scrub(str(e)))
    state, commit = comm.broadcast_object(outcome, src=0)
    timings["commit_s"] = time.monotonic() - t
    if state != "ok":
        raise CheckpointError(f"step {step} was not committed: {commit}")
    info = CheckpointInfo.from_commit(step_dir, commit, source="saved")
    info.timings = {k: round(v, 4) for k, v in timings.items()}
    info.blocked_s = time.monotonic() - t0
    return info
