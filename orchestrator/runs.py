"""The run ledger: ``<run_root>/<run_id>/run.json``.

A run is one stage executed once, however many attempts (restarts, requeues) it takes. The ledger is
the single source of truth the CLI reads (``unigen status``, ``unigen runs``), so every write is
atomic (temp file + ``os.replace``) and serialised with an advisory lock: the launcher, rank 0 of the
job and a user's ``unigen cancel`` may all update it.

Layout of a run folder::

    run.json          this ledger
    logs/             rank-<r>.log per rank (one per attempt appended), launcher.log
    checkpoints/      step-<N>/ ... + LATEST (see unigen.orchestrator.checkpoint)
    metrics.jsonl     every step's metrics; eval.jsonl + eval/step-<N>/: evaluations (runtime.evaluation)
    export/           the final model as a UniGenPipeline folder

A run folder is movable: every path run.json (and the tracker's spool) holds that points inside the folder is
stored relative to it (``RunPaths.record_path``) and resolved on read (``RunPaths.resolve``); a reference to
another run is its run id, found under the runs root at read time; the default MLflow store is recorded as
``sqlite:///../mlflow.db``, relative to the run folder (``tracking.store``). So a runs root copied or moved
elsewhere works on its own, and never reads or writes the original's files.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import glob
import json
import os
import re
import secrets as _random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from unigen.orchestrator.atomic import atomic_open
from unigen.orchestrator.errors import UserError
from unigen.orchestrator.secrets import redact

if TYPE_CHECKING:  # annotations only: config.init_check imports this module
    from unigen.orchestrator.config.profile import Profile
    from unigen.orchestrator.config.recipe import Recipe

SCHEMA_VERSION = 1
STATUSES = ("queued", "running", "requeued", "completed", "failed", "cancelled")
TERMINAL = ("completed", "failed", "cancelled")
ACTIVE = ("queued", "running", "requeued")  # not ended: a launcher may still hold the run
# Why an attempt ended. "preempted" and "timeout" are requeued by the scheduler, "crashed" counts
# against the failure budget, "requeue" is the runtime asking to be restarted (EXIT_REQUEUE).
EXIT_REASONS = ("completed", "preempted", "timeout", "requeue", "crashed", "cancelled", "lost")

_NAME_OK = re.compile(r"[^A-Za-z0-9._-]+")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def safe_name(name: str) -> str:
    """A run name reduced to characters safe in paths, job names and shells."""
    cleaned = _NAME_OK.sub("-", name).strip("-.")[:80]
    return cleaned or "run"


def new_run_id(name: str) -> str:
    """``<safe name>-<UTC yyyymmdd-HHMMSS>-<4 hex>``: sortable by time, unique across submitters."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{safe_name(name)}-{stamp}-{_random.token_hex(2)}"


@dataclass(frozen=True)
class RunPaths:
    """Where a run keeps its things."""

    root: Path

    @property
    def ledger(self) -> Path:
        return self.root / "run.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def export(self) -> Path:
        return self.root / "export"

    def rank_log(self, rank: int) -> Path:
        return self.logs / f"rank-{rank}.log"

    def record_path(self, path: str | os.PathLike[str]) -> str:
        """How run files store ``path``: relative to the run folder (POSIX form) when it is inside it, so
        the folder can move; absolute otherwise (an export written elsewhere with ``--out``)."""
        full = Path(path).expanduser()
        full = full if full.is_absolute() else Path.cwd() / full
        root = self.root.resolve()
        for candidate in (full, full.resolve()):
            if candidate.is_relative_to(root):
                return candidate.relative_to(root).as_posix() or "."
        return str(full.resolve())

    def resolve(self, stored: str | os.PathLike[str] | None) -> Path | None:
        """A path read from run files (see ``record_path``), as a path on this machine; None for none.

        Relative: inside this run folder, wherever it is now. Absolute (run.json written before run folders
        were movable, or a path outside the run): kept, except that a path into a folder named like this
        one (``.../<run id>/export``) that is not this folder is read as the same path inside this folder
        when that exists here: a moved or copied run uses its own files, never the original's."""
        if stored is None or str(stored) == "":
            return None
        path = Path(stored)
        if not path.is_absolute():
            return self.root / path
        root = self.root.resolve()
        if path.is_relative_to(root) or path.resolve().is_relative_to(root):
            return path
        parts = path.parts
        for i in range(len(parts) - 2, 0, -1):  # a folder named like this run, then something inside it
            if parts[i] == root.name:
                inside = root.joinpath(*parts[i + 1:])
                if inside.exists():
                    return inside
                break
        return path


class RunLedger:
    """Read and update one run's ``run.json`` safely."""

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.paths = RunPaths(Path(run_dir))

    # -- creation -------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        run_root: str | os.PathLike[str],
        *,
        run_id: str,
        recipe: Recipe,
        recipe_path: str,
        recipe_sha256: str,
        profile: Profile,
        parent: str | None = None,
        tracking_uri: str | None = None,
        workdir: str | None = None,
    ) -> "RunLedger":
        """A new run folder whose run.json records the resolved ``recipe`` and ``profile`` as JSON (what
        ``config.recorded`` rebuilds later); its stage, launcher and init_from are theirs."""
        from unigen.orchestrator.tracking.store import recorded_uri  # a store in the runs root: relative

        run_dir = Path(run_root) / run_id
        if run_dir.exists():
            raise UserError(f"run folder {run_dir} already exists: pick another --name")
        for sub in ("logs", "checkpoints"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        record = {
            "schema": SCHEMA_VERSION,
            "run_id": run_id,
            "stage": recipe.stage,
            "status": "queued",
            # Milliseconds: the stages of one submission are created within the same second.
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
            "updated_at": now_iso(),
            "launcher": profile.launcher,
            # Where `unigen submit` ran: relative data paths resolve from there, whoever resumes the run.
            "workdir": workdir,
            "recipe_path": recipe_path,
            "recipe_sha256": recipe_sha256,
            "recipe": redact(recipe.model_dump(mode="json")),
            "profile_name": profile.name,
            "profile": redact(profile.model_dump(mode="json")),
            "init_from": recipe.init_from,
            "parent": parent,
            "attempts": [],
            "mlflow": {"tracking_uri": recorded_uri(tracking_uri, run_dir), "experiment_id": None, "run_id": None,
                       "parent_run_id": None},
            "checkpoints": {"latest_local": None, "latest_durable": None, "last_save_s": None},
            "progress": {"step": 0, "max_steps": recipe.train.max_steps, "loss": None,
                         "samples_per_s": None, "updated_at": None},
            "export": None,
            "error": None,
        }
        ledger = cls(run_dir)
        ledger._write(record)
        return ledger

    # -- reading --------------------------------------------------------------------------------
    def read(self) -> dict[str, Any]:
        try:
            return json.loads(self.paths.ledger.read_text())
        except FileNotFoundError:
            raise UserError(f"{self.paths.ledger} not found: is {self.paths.root} a unigen run folder?") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{self.paths.ledger} is not valid JSON ({e}); restore it from run.json.bak") from None

    @property
    def run_id(self) -> str:
        return self.read()["run_id"]

    # -- writing --------------------------------------------------------------------------------
    def _write(self, record: dict[str, Any]) -> None:
        record["updated_at"] = now_iso()
        data = json.dumps(record, indent=2, sort_keys=False) + "\n"
        # run.json is never absent: readers take no lock and must always find a whole file.
        with atomic_open(self.paths.ledger, "w", fsync=True) as fh:
            fh.write(data)
            self._keep_backup()

    def _keep_backup(self) -> None:
        """Keep the previous good version as run.json.bak without ever removing run.json.

        Renaming run.json away first would leave a moment with no run.json, and an unlocked reader
        (``unigen status``, a launcher polling progress) would fail on it. A hard link shares the
        old file; where links are not supported, a copy does the same job.
        """
        if not self.paths.ledger.exists():
            return
        staged = self.paths.root / ".run.json.bak.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)
        try:
            os.link(self.paths.ledger, staged)
        except OSError:
            shutil.copyfile(self.paths.ledger, staged)
        os.replace(staged, self.paths.root / "run.json.bak")

    def update(self, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Apply ``change`` to the record under the lock and write it atomically."""
        with open(self.paths.root / ".run.json.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                record = self.read()
                change(record)
                self._write(record)
                return record
            finally:
                # Unlock, not just close: a process forked meanwhile (a data-loader worker, while the tracker's
                # thread writes) shares this open file and would hold the lock until it exits.
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- common updates -------------------------------------------------------------------------
    def set_status(self, status: str, *, error: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; valid: {', '.join(STATUSES)}")

        def change(r: dict[str, Any]) -> None:
            r["status"] = status
            if error is not None:
                r["error"] = error

        self.update(change)

    def start_attempt(self, *, job_id: str | None = None, nodes: str | None = None, **extra: Any) -> int:
        """Record a new attempt as running; returns its number (1-based)."""
        def change(r: dict[str, Any]) -> None:
            r["attempts"].append({"attempt": len(r["attempts"]) + 1, "job_id": job_id, "nodes": nodes,
                                  "started_at": now_iso(), "ended_at": None, "exit_reason": None,
                                  "exit_code": None, **extra})
            r["status"] = "running"

        return len(self.update(change)["attempts"])

    def end_attempt(self, *, exit_reason: str, exit_code: int | None, status: str, **extra: Any) -> None:
        """Close the newest open attempt and set the run's status."""
        if exit_reason not in EXIT_REASONS:
            raise ValueError(f"unknown exit reason {exit_reason!r}; valid: {', '.join(EXIT_REASONS)}")

        def change(r: dict[str, Any]) -> None:
            if r["attempts"] and r["attempts"][-1]["ended_at"] is None:
                r["attempts"][-1].update(ended_at=now_iso(), exit_reason=exit_reason, exit_code=exit_code,
                                         **extra)
            r["status"] = status

        self.update(change)

    def set_progress(self, **fields: Any) -> None:
        self.update(lambda r: r["progress"].update(fields, updated_at=now_iso()))

    def set_error(self, message: str | None, *, keep_first: bool = False) -> None:
        """The run's error line (None clears it); ``keep_first``: an error already there is the cause, keep it."""
        def change(r: dict[str, Any]) -> None:
            if not (keep_first and r.get("error")):
                r["error"] = message

        self.update(change)

    def request_cancel(self) -> None:
        """Mark the run for cancellation (``cancel_requested``: when it was first asked)."""
        self.update(lambda r: r.update(cancel_requested=r.get("cancel_requested") or now_iso()))

    def set_launcher_info(self, launcher: str, info: dict[str, Any]) -> None:
        """What a launcher needs to find its job again: ``slurm`` (job ids, script), ``ray`` (job, address) or
        ``supervisor`` (the local supervisor's pid and host)."""
        if launcher not in ("slurm", "ray", "supervisor"):
            raise ValueError(f"unknown launcher section {launcher!r}")
        self.update(lambda r: r.update({launcher: info}))

    def update_last_attempt(self, **fields: Any) -> None:
        """Add fields to the newest attempt (e.g. the ranks a launcher started)."""
        self.update(lambda r: r["attempts"][-1].update(fields) if r["attempts"] else None)

    def set_init_from(self, lineage: dict[str, Any]) -> None:
        """Where this stage's initial weights came from (the previous stage's run, step and checkpoint)."""
        self.update(lambda r: r.update(init_from=lineage))

    def set_export(self, path: str | os.PathLike[str], step: int) -> None:
        """The final model's folder (stored relative to the run folder) and the step it holds."""
        self.update(lambda r: r.update(export={"path": self.paths.record_path(path), "step": step}))

    def set_eval(self, merge: Callable[[dict[str, Any] | None], dict[str, Any]]) -> None:
        """The latest evaluation summary: ``merge`` gets the recorded one (or None) and returns the new one."""
        self.update(lambda r: r.update(eval=merge(r.get("eval"))))

    def set_mlflow(self, **fields: Any) -> None:
        """MLflow ids of this run (experiment, parent and own run ids, the store URI as recorded)."""
        self.update(lambda r: r.setdefault("mlflow", {}).update(fields))


DEFAULT_RUN_ROOT = "unigen-runs"


def checkpoint_mirror(recipe: Recipe, run_id: str) -> str | None:
    """Where a run's committed checkpoints are mirrored: the recipe's ``checkpoint.uri`` + the run id.

    The runtime uploads there; ``unigen status``, ``resume --plan`` and a later stage's
    ``init_from: run:<id>`` read it back (from ``recorded_recipe(record)``), so all of them take it from here."""
    uri = recipe.checkpoint.uri
    return f"{uri.rstrip('/')}/{run_id}" if uri else None


def default_run_root() -> Path:
    """Where runs live when no profile says otherwise: $UNIGEN_RUN_ROOT, else ./unigen-runs."""
    return Path(os.environ.get("UNIGEN_RUN_ROOT") or DEFAULT_RUN_ROOT).resolve()


def list_runs(run_root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every readable run record under ``run_root`` (none when it does not exist), oldest first."""
    records = []
    for ledger in sorted(Path(run_root).glob("*/run.json")):
        try:
            records.append(json.loads(ledger.read_text()))
        except (OSError, json.JSONDecodeError):
            continue  # a run being created right now, or a damaged one (`unigen status` reports it)
    records.sort(key=lambda r: r.get("created_at") or "")
    return records


def find_run(run_root: str | os.PathLike[str], ref: str) -> RunLedger:
    """A run by id, unique id prefix, or path to its folder."""
    root = Path(run_root)
    for folder in (Path(ref), root / ref):  # a path to a run folder, then an exact id
        if (folder / "run.json").is_file():
            return RunLedger(folder)
    matches = sorted(p.parent for p in root.glob(f"{glob.escape(ref)}*/run.json"))
    if len(matches) == 1:
        return RunLedger(matches[0])
    if not matches:
        raise UserError(f"no run {ref!r} under {root}: `unigen runs` lists them")
    names = ", ".join(p.name for p in matches[:5])
    raise UserError(f"run {ref!r} is ambiguous under {root} ({names}...): give more of the id")
