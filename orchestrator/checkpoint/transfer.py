"""Copy files to and from any fsspec filesystem with progress, a stall watchdog, and retries.

On an async filesystem (s3fs) a transfer is s3fs's own ``_put_file``/``_get_file`` coroutine (so big
files go multipart with our chunk size and part concurrency), run on the filesystem's event loop;
cancelling its future aborts the HTTP requests, which is how the watchdog restarts a transfer that
made no progress for ``stall_timeout_s``. On a sync filesystem (a shared path) a worker thread copies
in chunks to a temp name and renames; a stalled worker is abandoned and a new one started.
"""
from __future__ import annotations

import asyncio
import math
import os
import random
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from unigen.orchestrator.atomic import atomic_open
from unigen.orchestrator.secrets import scrub

_WATCH_S = 0.25  # how often the watchdog looks at progress when nothing finishes


@dataclass(frozen=True)
class TransferPolicy:
    """How files move. Defaults suit checkpoints of a few MB to tens of GB."""

    chunksize: int = 16 * 2**20
    """Multipart part size: files of 2 parts or more go multipart (S3 needs parts >= 5 MiB; a file
    over 9000 parts gets bigger parts). 16 MiB x 8 parts x 2 files matched or beat plain s3fs
    ``put_file`` on SeaweedFS (bench/checkpoint_sync.py)."""
    max_concurrency: int = 8
    """Parts of one file in flight at once; memory held is about
    chunksize * max_concurrency * file_concurrency (256 MiB with the defaults)."""
    file_concurrency: int = 2
    """Files in flight at once."""
    stall_timeout_s: float = 120.0
    """Restart a transfer that reported no progress for this long. Progress is reported per part,
    so keep it above chunksize * max_concurrency / the slowest bandwidth you accept (128 MiB at
    ~1 MiB/s with the defaults)."""
    retry_base_s: float = 1.0
    """First retry delay; doubles per failed attempt of the same file."""
    retry_max_s: float = 60.0
    """Longest delay between two attempts."""
    max_attempts: int | None = None
    """Give up on a file after this many attempts; None retries until aborted (a newer checkpoint
    replaces this one, or the uploader closes)."""

    def delay(self, attempt: int) -> float:
        base = min(self.retry_max_s, self.retry_base_s * 2 ** max(0, attempt - 1))
        return base * random.uniform(0.8, 1.0)  # jitter: ranks of many jobs do not retry in lockstep


class Aborted(Exception):
    """The caller asked to stop (closing, or superseded by a newer checkpoint)."""


class TransferFailed(Exception):
    """A file kept failing past ``max_attempts``."""


class _Progress:
    """An fsspec-compatible callback (the parts of fsspec's Callback that s3fs calls) that records
    when bytes last moved: the stall watchdog's clock."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def _moved(self, *args: Any, **kwargs: Any) -> None:
        self.last = time.monotonic()

    set_size = relative_update = absolute_update = _moved

    def branched(self, *args: Any, **kwargs: Any) -> None:
        return None  # no child callback per file

    call = branched


class _Attempt:
    """One try at one file; ``poll()`` says running / done / failed."""

    def __init__(self, fs: Any, op: str, lpath: str, rpath: str, policy: TransferPolicy,
                 wake: threading.Event):
        self.progress = _Progress()
        self.error: BaseException | None = None
        self._wake = wake  # set when this attempt ends, so the scheduler reacts at once
        self._done = threading.Event()
        self._cancel = threading.Event()
        self._future = None
        if getattr(fs, "async_impl", False) and hasattr(fs, "_put_file"):
            self._start_async(fs, op, lpath, rpath, policy)
        else:
            threading.Thread(target=self._run_sync, args=(fs, op, lpath, rpath, policy), daemon=True,
                             name="ckpt-copy").start()

    def _start_async(self, fs: Any, op: str, lpath: str, rpath: str, policy: TransferPolicy) -> None:
        if op == "put":
            # S3 allows 10000 parts per object: grow the part for very large files.
            chunksize = max(policy.chunksize, math.ceil(os.path.getsize(lpath) / 9000))
            coro = fs._put_file(lpath, rpath, callback=self.progress, chunksize=chunksize,
                                max_concurrency=policy.max_concurrency)
        else:
            coro = fs._get_file(rpath, lpath, callback=self.progress, chunksize=policy.chunksize,
                                max_concurrency=policy.max_concurrency)
        self._future = asyncio.run_coroutine_threadsafe(coro, fs.loop)

        def finished(fut: Any) -> None:
            if not fut.cancelled():
                self.error = fut.exception()
            self._done.set()
            self._wake.set()

        self._future.add_done_callback(finished)

    def _run_sync(self, fs: Any, op: str, lpath: str, rpath: str, policy: TransferPolicy) -> None:
        try:
            if op == "put":
                partial = f"{rpath}.partial-{secrets.token_hex(4)}"
                fs.makedirs(fs._parent(rpath), exist_ok=True)  # a path store needs its folders
                with open(lpath, "rb") as src, fs.open(partial, "wb") as dst:
                    self._copy(src, dst, policy.chunksize)
                fs.mv(partial, rpath)
            else:
                with fs.open(rpath, "rb") as src, atomic_open(lpath, "wb") as dst:
                    self._copy(src, dst, policy.chunksize)
        except BaseException as e:  # reported through poll(); a thread must not die silently
            self.error = e
        finally:
            self._done.set()
            self._wake.set()

    def _copy(self, src: Any, dst: Any, chunksize: int) -> None:
        while True:
            if self._cancel.is_set():
                raise Aborted("cancelled")
            chunk = src.read(chunksize)
            if not chunk:
                return
            dst.write(chunk)
            self.progress.relative_update(len(chunk))

    def poll(self) -> str:
        if not self._done.is_set():
            return "running"
        return "failed" if self.error is not None else "done"

    def cancel(self) -> None:
        self._cancel.set()
        if self._future is not None:
            self._future.cancel()


@dataclass
class FileJob:
    """One file to move: ``op`` is "put" (local -> remote) or "get" (remote -> local)."""

    op: str
    lpath: str
    rpath: str
    label: str
    size: int = 0
    attempts: int = 0
    seconds: float = 0.0


def run_transfers(fs: Any, jobs: list[FileJob], policy: TransferPolicy, *,
                  stop: threading.Event | None = None,
                  abort_while_retrying: Callable[[], bool] | None = None,
                  on_event: Callable[[str, dict[str, Any]], None] | None = None,
                  on_file_done: Callable[[FileJob], None] | None = None) -> None:
    """Move every job, ``policy.file_concurrency`` at a time; return when all are done.

    Raises :class:`Aborted` when ``stop`` is set, or when ``abort_while_retrying()`` turns true while a
    file waits for its next attempt (the uploader uses it to drop a failing upload once a newer
    checkpoint is waiting); :class:`TransferFailed` past ``policy.max_attempts``.
    """
    emit = on_event or (lambda kind, payload: None)
    waiting: list[tuple[float, FileJob]] = [(0.0, j) for j in jobs]  # (not before, job)
    running: list[tuple[FileJob, _Attempt, float]] = []
    wake = threading.Event()
    try:
        while waiting or running:
            wake.clear()
            if stop is not None and stop.is_set():
                raise Aborted("stopped")
            now = time.monotonic()
            retrying = any(j.attempts > 0 for _, j in waiting)
            if retrying and abort_while_retrying is not None and abort_while_retrying():
                raise Aborted("superseded")
            while waiting and len(running) < policy.file_concurrency:
                ready = [w for w in waiting if w[0] <= now]
                if not ready:
                    break
                waiting.remove(ready[0])
                job = ready[0][1]
                job.attempts += 1
                running.append((job, _Attempt(fs, job.op, job.lpath, job.rpath, policy, wake), now))
            still: list[tuple[FileJob, _Attempt, float]] = []
            for job, attempt, started in running:
                state = attempt.poll()
                stalled_for = time.monotonic() - attempt.progress.last
                if state == "done":
                    job.seconds += time.monotonic() - started
                    if on_file_done is not None:
                        on_file_done(job)
                    continue
                if state == "running" and stalled_for <= policy.stall_timeout_s:
                    still.append((job, attempt, started))
                    continue
                if state == "running":
                    attempt.cancel()
                    emit("upload_stalled" if job.op == "put" else "download_stalled",
                         {"file": job.label, "stalled_s": round(stalled_for, 1), "attempt": job.attempts})
                    reason = f"no progress for {stalled_for:.0f} s"
                else:
                    reason = scrub(f"{type(attempt.error).__name__}: {attempt.error}")
                job.seconds += time.monotonic() - started
                if policy.max_attempts is not None and job.attempts >= policy.max_attempts:
                    raise TransferFailed(f"{job.label}: gave up after {job.attempts} attempts ({reason})")
                delay = policy.delay(job.attempts)
                emit("upload_retry" if job.op == "put" else "download_retry",
                     {"file": job.label, "attempt": job.attempts, "delay_s": round(delay, 2), "error": reason})
                waiting.append((time.monotonic() + delay, job))
            running = still
            timeout = _WATCH_S
            if waiting and len(running) < policy.file_concurrency:  # a free slot: sleep until a retry is due
                timeout = min(timeout, max(0.0, min(w[0] for w in waiting) - time.monotonic()))
            if waiting or running:
                wake.wait(timeout)
    finally:
        for _, attempt, _ in running:
            attempt.cancel()


def call_with_retry(fn: Callable[[], Any], label: str, policy: TransferPolicy, *, stop: threading.Event,
                    on_event: Callable[[str, dict[str, Any]], None]) -> Any:
    """Run a small remote operation (a listing, a delete, a tiny write) with the same backoff."""
    attempt = 0
    while True:
        if stop.is_set():
            raise Aborted("stopped")
        attempt += 1
        try:
            return fn()
        except FileNotFoundError:
            raise
        except Exception as e:
            if policy.max_attempts is not None and attempt >= policy.max_attempts:
                raise TransferFailed(f"{label}: gave up after {attempt} attempts ({scrub(str(e))})") from None
            delay = policy.delay(attempt)
            on_event("remote_retry", {"op": label, "attempt": attempt, "delay_s": round(delay, 2),
                                      "error": scrub(f"{type(e).__name__}: {e}")})
            if stop.wait(delay):
                raise Aborted("stopped") from None
