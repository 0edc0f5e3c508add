"""The background uploader: committed checkpoints to the remote, in protocol order, without ever
blocking the training step.

For each checkpoint: data files, then the manifests, then COMMIT.json, then LATEST (then DeepSpeed's
scripts and ``latest``, see deepspeed_tools.py), so a reader of the remote sees a COMMIT only once
everything it names is there. A step that already has a different COMMIT remotely (a re-save of the
same step) loses that COMMIT first. Then remote retention mirrors keep_last/keep_every and never
deletes the newest durable checkpoint; half-uploaded folders older than it are cleaned up.

If checkpoints arrive faster than they upload, the newest wins: older queued ones are dropped
("upload_superseded") unless keep_every protects them, and a failing upload is abandoned once a newer
checkpoint is waiting. Nothing else gives up: retries go on with backoff until the uploader closes.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from unigen.orchestrator.checkpoint.deepspeed_tools import scripts_for
from unigen.orchestrator.checkpoint.layout import COMMIT_NAME, step_dir_name
from unigen.orchestrator.checkpoint.remote import Remote
from unigen.orchestrator.checkpoint.retention import select_for_deletion
from unigen.orchestrator.checkpoint.transfer import Aborted, FileJob, call_with_retry, run_transfers
from unigen.orchestrator.checkpoint.verify import LocalStepView, verify_step
from unigen.orchestrator.secrets import scrub

log = logging.getLogger("unigen.checkpoint")

Emit = Callable[[str, dict[str, Any]], None]


@dataclass
class UploadJob:
    step: int
    path: Path
    committed_at: float  # time.time() of the commit, to report save-to-durable latency
    done: set[str] = field(default_factory=set)  # files already uploaded by this job (kept across retries)


class Uploader:
    """One daemon thread that owns every remote write of a run."""

    def __init__(self, remote: Remote, *, keep_last: int, keep_every: int | None, emit: Emit):
        self.remote = remote
        self.keep_last, self.keep_every = keep_last, keep_every
        self._emit = emit
        self._cv = threading.Condition()
        self._queue: dict[int, UploadJob] = {}
        self._current: UploadJob | None = None
        self._stop = threading.Event()
        self.durable_step: int | None = None
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._loop, name="ckpt-uploader", daemon=True)
        self._thread.start()

    # -- API used by the manager ----------------------------------------------------------------
    def submit(self, step: int, path: Path) -> None:
        """Queue a committed checkpoint; returns at once."""
        with self._cv:
            self._queue[step] = UploadJob(step, Path(path), time.time())
            self._cv.notify_all()
        self._emit("upload_queued", {"step": step})

    def pinned(self) -> set[int]:
        """Steps queued or uploading: local retention must not delete them."""
        with self._cv:
            return set(self._queue) | ({self._current.step} if self._current else set())

    def note_durable(self, step: int | None) -> None:
        """Record a durable step: one just uploaded, or one a resume's remote listing found."""
        if step is not None:
            with self._cv:
                self.durable_step = max(step, self.durable_step if self.durable_step is not None else step)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued or uploading; False if ``timeout`` ran out first."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._queue and self._current is None, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush (up to ``timeout``), then stop the thread. Returns whether everything got uploaded."""
        flushed = self.flush(timeout)
        left = sorted(self.pinned())
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        self._thread.join(timeout=10)
        if not flushed:
            self._emit("upload_abandoned", {"steps": left, "durable_step": self.durable_step})
        return flushed

    # -- the thread -----------------------------------------------------------------------------
    def _next_job(self) -> UploadJob | None:
        with self._cv:
            while not self._queue and not self._stop.is_set():
                self._cv.wait()
            if self._stop.is_set():
                return None
            newest = max(self._queue)
            job = self._queue.pop(newest)
            for step in sorted(self._queue):
                if not self._protected(step):
                    del self._queue[step]
                    self._emit("upload_superseded", {"step": step, "by": newest})
            self._current = job
            return job

    def _protected(self, step: int) -> bool:
        return bool(self.keep_every) and step % self.keep_every == 0

    def _newer_waiting(self, job: UploadJob) -> bool:
        with self._cv:
            return not self._protected(job.step) and any(s > job.step for s in self._queue)

    def _loop(self) -> None:
        while True:
            job = self._next_job()
            if job is None:
                return
            try:
                self._upload(job)
                self._apply_retention()
            except Aborted as e:
                if not self._stop.is_set():
                    self._emit("upload_superseded", {"step": job.step, "reason": str(e)})
            except Exception as e:  # the local copy vanished, or a bug: report, keep the thread alive
                self.last_error = scrub(f"{type(e).__name__}: {e}")
                self._emit("upload_failed", {"step": job.step, "error": self.last_error})
                log.warning("upload of step %d failed: %s", job.step, self.last_error)
            finally:
                with self._cv:
                    self._current = None
                    self._cv.notify_all()

    def _retry(self, fn: Callable[[], Any], label: str) -> Any:
        return call_with_retry(fn, label, self.remote.policy, stop=self._stop, on_event=self._emit)

    def _upload(self, job: UploadJob) -> None:
        local = verify_step(LocalStepView(job.path), job.step, level="size")
        if not local.ok:
            raise RuntimeError(f"local {job.path} no longer verifies: {local.reason}")
        local_commit = (job.path / COMMIT_NAME).read_bytes()
        started = time.monotonic()
        remote_commit = self._retry(lambda: self.remote.read_commit(job.step), "read COMMIT")
        already = remote_commit == local_commit
        if not already:
            if remote_commit is not None:
                self._retry(lambda: self.remote.uncommit(job.step), "remove old COMMIT")
            manifests = [m["path"] for m in local.commit["manifests"]]
            for group in ([f for f, _, _ in local.files], manifests, [COMMIT_NAME]):
                self._put_files(job, group)
        with self._cv:
            newest = self.durable_step is None or job.step >= self.durable_step
        if newest:
            self._retry(lambda: self.remote.write_latest(job.step), "write LATEST")
            scripts = scripts_for(job.path)
            self._retry(lambda: self.remote.write_deepspeed_files(job.step, scripts), "write DeepSpeed's latest")
        seconds = time.monotonic() - started
        self.note_durable(job.step)
        self.last_error = None
        self._emit("durable", {
            "step": job.step, "uri": self.remote.url(step_dir_name(job.step)), "bytes": local.bytes, "already": already,
            "upload_s": round(seconds, 3), "mb_per_s": round(local.bytes / 1e6 / seconds, 1) if seconds > 0 else None,
            "commit_to_durable_s": round(time.time() - job.committed_at, 3)})

    def _put_files(self, job: UploadJob, rels: list[str]) -> None:
        name = step_dir_name(job.step)
        jobs = [FileJob("put", str(job.path / rel), self.remote.path(name, rel), label=f"{name}/{rel}",
                        size=(job.path / rel).stat().st_size) for rel in rels if rel not in job.done]

        def done(fj: FileJob) -> None:
            job.done.add(fj.label.split("/", 1)[1])
            self._emit("upload_file", {"step": job.step, "file": fj.label, "bytes": fj.size,
                                       "seconds": round(fj.seconds, 3), "attempts": fj.attempts})

        run_transfers(self.remote.fs, jobs, self.remote.policy, stop=self._stop,
                      abort_while_retrying=lambda: self._newer_waiting(job), on_event=self._emit,
                      on_file_done=done)

    def _apply_retention(self) -> None:
        listing = self._retry(self.remote.list, "list")
        committed = listing.committed()
        if not committed:
            return
        newest = committed[-1]
        pinned = self.pinned()
        doomed = select_for_deletion(committed, keep_last=self.keep_last, keep_every=self.keep_every,
                                     protect={newest, *pinned})
        stale = [s for s in listing.steps if s not in committed and s < newest and s not in pinned]
        for step in sorted(set(doomed) | set(stale)):
            self._retry(lambda s=step: self.remote.delete_step(s), f"delete {step_dir_name(step)}")
            self._emit("remote_deleted", {"step": step, "committed": step in committed})
