"""CheckpointManager: the one object the training runtime talks to for saves, resumes and sync."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

from unigen.orchestrator.checkpoint.errors import CheckpointError
from unigen.orchestrator.checkpoint.local import LocalStore
from unigen.orchestrator.checkpoint.plan import Candidate, ResumePlan, make_plan
from unigen.orchestrator.checkpoint.protocol import CheckpointInfo, WriteFn, save_collective
from unigen.orchestrator.checkpoint.retention import select_for_deletion, validate_retention
from unigen.orchestrator.checkpoint.transfer import TransferPolicy
from unigen.orchestrator.comm import Comm, LocalComm
from unigen.orchestrator.secrets import redact, scrub

log = logging.getLogger("unigen.checkpoint")

EventFn = Callable[[str, dict[str, Any]], None]
_QUIET = {"upload_file", "upload_queued"}
_LOUD = {"upload_retry", "upload_stalled", "upload_failed", "upload_abandoned", "remote_retry", "quarantined",
         "download_retry", "download_stalled"}


class CheckpointManager:
    """Committed checkpoints of one run: save, verify, resume, and mirror them to a remote.

    Args:
        local_dir: the run's checkpoints folder, ``<run_dir>/checkpoints``. With several nodes it must
            be on a filesystem every rank shares (rank 0 writes COMMIT after reading every manifest).
        comm: the job's collectives (``TorchComm()`` in a distributed run, ``LocalComm()`` alone).
        remote_uri: where committed checkpoints are mirrored (fsspec URL: ``s3://bucket/runs/<run id>``,
            a shared path), laid out like ``local_dir``. None: local only.
        storage_options: fsspec options for ``remote_uri`` (``key``, ``secret``, ``endpoint_url``,
            ``client_kwargs``...). Without them the environment's AWS_* variables are used.
        keep_last: committed checkpoints kept (locally and remotely), newest first.
        keep_every: also keep every checkpoint whose step is a multiple of this, forever.
        on_event: ``on_event(kind, payload)``, called from the caller's thread for saves and from the
            uploader thread for uploads; must be quick and thread-safe. Kinds: committed, upload_queued,
            upload_file, upload_retry, upload_stalled, durable, upload_superseded, upload_failed,
            upload_abandoned, remote_retry, remote_deleted, local_deleted, quarantined, resumed,
            durable_known. Payloads never contain credentials.
        transfer: chunk size, concurrency, stall timeout and retry policy of uploads and downloads.
        fsync: force each data file to disk before COMMIT names it (off only for benchmarks of RAM disks).
    """

    def __init__(self, local_dir: str | Path, *, comm: Comm | None = None, remote_uri: str | None = None,
                 storage_options: dict[str, Any] | None = None, keep_last: int = 3,
                 keep_every: int | None = None, on_event: EventFn | None = None,
                 transfer: TransferPolicy | None = None, fsync: bool = True):
        validate_retention(keep_last, keep_every)
        self.comm = comm or LocalComm()
        self.local_dir = Path(local_dir)
        self.store = LocalStore(self.local_dir)
        self.remote_uri = remote_uri.rstrip("/") if remote_uri else None
        self.storage_options = storage_options
        self.keep_last, self.keep_every = keep_last, keep_every
        self.transfer = transfer or TransferPolicy()
        self.fsync = fsync
        self._on_event = on_event
        self._remote = None
        self._uploader = None
        self.local_step: int | None = None
        # Nothing on disk changes here: ``unigen resume RUN --plan`` builds a manager next to a live run.
        if self.comm.rank == 0 and self.remote_uri:
            self._remote_handle()  # fail fast on an unusable URI, before training starts

    # -- events ---------------------------------------------------------------------------------
    def _emit(self, kind: str, payload: dict[str, Any]) -> None:
        payload = redact(payload)
        level = logging.WARNING if kind in _LOUD else logging.DEBUG if kind in _QUIET else logging.INFO
        log.log(level, "checkpoint %s: %s", kind, payload)
        if self._on_event is not None:
            try:
                self._on_event(kind, payload)
            except Exception as e:  # a broken listener must not break a save or the uploader
                log.warning("checkpoint on_event(%s) raised %s", kind, scrub(repr(e)))

    def _remote_handle(self):
        if self._remote is None and self.remote_uri:
            from unigen.orchestrator.checkpoint.remote import Remote

            self._remote = Remote(self.remote_uri, self.storage_options, self.transfer)
        return self._remote

    def _uploader_handle(self):
        if self._uploader is None and self.remote_uri:
            from unigen.orchestrator.checkpoint.uploader import Uploader

            self._uploader = Uploader(self._remote_handle(), keep_last=self.keep_last, keep_every=self.keep_every,
                                      emit=self._emit)
        return self._uploader

    # -- save -----------------------------------------------------------------------------------
    def save(self, step: int, write_fn: WriteFn, *, metadata: dict[str, Any]) -> CheckpointInfo:
        """Write a committed checkpoint of ``step``. Collective: every rank calls it.

        ``write_fn(step_dir)`` writes this rank's files into ``step_dir`` and returns their paths
        relative to it (absolute paths inside it and folders are accepted too). ``metadata`` (JSON:
        samples seen, MLflow run id, ...) is stored in COMMIT.json and given back by ``resume``.
        A step that is already committed is not written again (``source == "existing"``).
        Returns once COMMIT and LATEST exist; the upload happens later, in the background.
        """
        t0 = time.monotonic()
        info = save_collective(self.store, self.comm, step, write_fn, metadata, fsync=self.fsync)
        if self.comm.rank == 0:
            self.local_step = max(step, self.local_step if self.local_step is not None else step)
            if info.source == "saved":
                uploader = self._uploader_handle()
                if uploader is not None:
                    uploader.submit(step, Path(info.path))
            t = time.monotonic()
            self._apply_local_retention()
            info.timings["retention_s"] = round(time.monotonic() - t, 4)
            info.blocked_s = time.monotonic() - t0
            self._emit("committed", {"step": step, "path": info.path, "source": info.source,
                                     "blocked_s": round(info.blocked_s, 4), "files": info.files,
                                     "bytes": info.bytes, **info.timings})
        else:
            info.blocked_s = time.monotonic() - t0
        return info

    def _apply_local_retention(self) -> None:
        up = self._uploader  # never delete what is uploading or the newest durable (remote) checkpoint
        protect = ({*up.pinned(), up.durable_step} - {None}) if up else set()
        for step in select_for_deletion(self.store.committed_steps(), keep_last=self.keep_last,
                                        keep_every=self.keep_every, protect=protect):
            self.store.discard(self.store.step_dir(step))
            self._emit("local_deleted", {"step": step})

    # -- resume ---------------------------------------------------------------------------------
    def plan_resume(self, *, level: str = "sha256", strict: bool = True) -> ResumePlan:
        """Which checkpoint a resume would load and why newer ones would not; reads, never moves.

        ``level="size"`` skips hashing local files (fast; for a quick look). With ``strict`` (the
        default) a run whose checkpoints all fail to verify raises CheckpointError naming them;
        ``strict=False`` returns the plan with ``error`` set instead (for ``unigen resume --plan``).
        """
        return make_plan(self.local_dir, self._remote_handle(), level=level, strict=strict)

    def resume(self, comm: Comm | None = None) -> CheckpointInfo | None:
        """Collective: rank 0 picks (and if needed downloads) the checkpoint, every rank gets the same
        answer: a CheckpointInfo whose ``path`` is the step folder, or None for a fresh start."""
        comm = comm or self.comm
        outcome: tuple[str, Any] = ("", None)
        if comm.rank == 0:
            try:
                outcome = ("ok", self._resume_rank0())
            except CheckpointError as e:
                outcome = ("error", str(e))
            except Exception as e:
                outcome = ("error", scrub(f"resume failed: {type(e).__name__}: {e}"))
        state, info = comm.broadcast_object(outcome, src=0)
        if state != "ok":
            raise CheckpointError(info)
        if info is not None:
            self.local_step = info.step
        return info

    def _resume_rank0(self) -> CheckpointInfo | None:
        self.store.purge_leftovers()  # half downloads and deletions of a previous attempt
        failed_downloads: list[Candidate] = []
        while True:
            plan = make_plan(self.local_dir, self._remote_handle(), strict=True, known_bad=tuple(failed_downloads))
            for cand in plan.rejected:
                if cand.source == "local" and Path(cand.location).is_dir():
                    moved = self.store.quarantine(Path(cand.location), f"step-{cand.step}: {cand.reason}")
                    plan.quarantined.append(str(moved))
                    self._emit("quarantined", {"step": cand.step, "reason": cand.reason, "path": str(moved)})
            chosen = plan.chosen
            rejected = [f"step-{c.step} {c.source}: {c.reason}" for c in plan.rejected]
            if chosen is None:
                self._emit("resumed", {"step": None, "source": None, "path": None, "rejected": rejected})
                self._note_remote(plan, None)
                return None
            if chosen.source == "remote":
                try:
                    path, verdict = self._remote_handle().download(chosen.step, self.local_dir, on_event=self._emit)
                except CheckpointError as e:
                    failed_downloads.append(Candidate(chosen.step, "remote", chosen.location, False, str(e), True))
                    continue
                info = CheckpointInfo.from_commit(path, verdict.commit, source="remote")
            else:
                info = CheckpointInfo.from_commit(Path(chosen.location), chosen.commit, source="local")
            self.store.write_latest(info.step)
            self._emit("resumed", {"step": info.step, "source": info.source, "path": info.path,
                                   "rejected": rejected})
            self._note_remote(plan, info)
            return info

    def _note_remote(self, plan: ResumePlan, info: CheckpointInfo | None) -> None:
        """Tell the uploader what is durable already, and re-queue a local checkpoint the previous
        attempt committed but did not get to upload."""
        uploader = self._uploader_handle()
        if uploader is None or plan.remote_error:
            return
        durable = max(plan.remote_committed) if plan.remote_committed else None
        uploader.note_durable(durable)
        if durable is not None:
            self._emit("durable_known", {"step": durable})
        if info is not None and info.step not in plan.remote_committed:
            uploader.submit(info.step, Path(info.path))

    # -- status and shutdown --------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Newest local committed step, newest durable (uploaded) step, uploads pending, last error."""
        up = self._uploader
        return {"local_step": self.local_step, "durable_step": up.durable_step if up else None,
                "pending_uploads": sorted(up.pinned()) if up else [], "last_error": up.last_error if up else None,
                "remote_uri": self.remote_uri}

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for queued uploads (rank 0; True at once elsewhere or without a remote)."""
        return self._uploader.flush(timeout) if self._uploader else True

    def close(self, timeout: float | None = None) -> bool:
        """Flush uploads up to ``timeout`` seconds, then stop the uploader. Returns whether all were
        uploaded; the ones that were not are reported (``upload_abandoned``) and resume later runs
        upload them again."""
        ok = self._uploader.close(timeout) if self._uploader else True
        self._uploader = None
        self.store.wait_purges()
        return ok
