"""The background sender: training enqueues tracking ops, one thread sends them to MLflow.

Why a thread: a training step must never wait for MLflow. ``submit`` only appends to a list, so a
tracking call costs microseconds whether the server is fast, slow or gone; only the thread talks to
the network, with short HTTP timeouts (``apply_http_timeouts``).

States of the thread:
- healthy: send each batch of ops as it comes (consecutive metric ops merged into ``log_batch``).
- backlog: a send failed for a transient reason (server down, 5xx, database locked) or the spool
  file already held ops at start. The failed op and everything after it go to the spool file, in
  order, and every later op is appended there too, so nothing overtakes what waits on disk. The
  thread retries with exponential backoff (1 s doubling to 30 s); once a replay of the whole spool
  succeeds it is healthy again.
One warning per outage (logger ``unigen.tracking``), one info line when MLflow answers again. An op
MLflow rejects as invalid is dropped with a warning: retrying it would block every op behind it.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Mapping

from unigen.orchestrator.runs import RunLedger
from unigen.orchestrator.tracking.backend import MAX_METRICS_PER_BATCH, MlflowBackend, is_transient, short_error
from unigen.orchestrator.tracking.spool import Spool, spool_path
from unigen.orchestrator.tracking.store import display_uri, run_tracking_uri

log = logging.getLogger("unigen.tracking")

HTTP_TIMEOUT_S = 5
HTTP_MAX_RETRIES = 0
OnDrop = Callable[[list[dict[str, Any]], BaseException], None]  # gets the ops MLflow rejected and why


def apply_http_timeouts(timeout_s: int = HTTP_TIMEOUT_S) -> None:
    """Short MLflow HTTP timeouts for this process unless the user set their own: MLflow's defaults
    (120 s, 7 retries with backoff) would let one call to a dead server take minutes."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(HTTP_MAX_RETRIES))


def _groups(ops: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Consecutive metric ops merged up to one ``log_batch`` (1000 rows); every other op alone.
    A group is sent whole or not at all, so a failure never leaves half a group to be sent twice."""
    groups: list[list[dict[str, Any]]] = []
    rows = 0
    for op in ops:
        size = len(op.get("metrics") or ())
        if (op.get("op") == "metrics" and groups and groups[-1][0].get("op") == "metrics"
                and rows + size <= MAX_METRICS_PER_BATCH):
            groups[-1].append(op)
            rows += size
        else:
            groups.append([op])
            rows = size
    return groups


def send_ops(backend: MlflowBackend, ops: list[dict[str, Any]], on_drop: OnDrop) -> tuple[int, BaseException | None]:
    """Send ``ops`` in order. Returns (how many were handled, the transient error that stopped it or
    None). Ops MLflow rejects are handed to ``on_drop`` and count as handled."""
    done = 0
    for group in _groups(ops):
        try:
            if group[0].get("op") == "metrics":
                backend.apply_metric_ops(group)
            else:
                backend.apply(group[0])
        except Exception as e:  # noqa: BLE001 - classified below; training never sees it
            if is_transient(e):
                return done, e
            on_drop(group, e)
        done += len(group)
    return done, None


def replay_spool(backend: MlflowBackend, spool: Spool, on_drop: OnDrop) -> tuple[int, int, BaseException | None]:
    """Send what waits in ``spool``, in order, keeping whatever could not be sent.
    Returns (sent, left, error)."""
    with spool.locked():
        ops = spool.read()
        if not ops:
            return 0, 0, None
        done, error = send_ops(backend, ops, on_drop)
        if done:  # nothing sent: leave the file alone (a retry against a dead server costs no write)
            spool.rewrite(ops[done:])
        return done, len(ops) - done, error


class Sender:
    """Sends ops for one run from a daemon thread; see the module docstring."""

    def __init__(self, backend: MlflowBackend, spool: Spool, *, retry_initial_s: float = 1.0,
                 retry_max_s: float = 30.0):
        self.backend = backend
        self.spool = spool
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.dropped = 0
        self.started = threading.Event()  # the MLflow run is known (a start op went through)
        self._cond = threading.Condition()
        self._queue: list[dict[str, Any]] = []
        self._busy = False
        self._stop = False
        self._backlog = spool.pending() > 0
        self._next_retry = 0.0  # a spool left by an earlier attempt is retried at once
        self._delay = retry_initial_s
        self._in_outage = False
        self._held: list[dict[str, Any]] = []  # ops the spool file could not take (disk full)
        self._disk_warned = False
        self._thread = threading.Thread(target=self._loop, name="unigen-tracking", daemon=True)

    # -- called from training -------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, op: dict[str, Any]) -> None:
        """Queue ``op``; returns at once."""
        with self._cond:
            self._queue.append(op)
            self._cond.notify()

    @property
    def in_outage(self) -> bool:
        return self._backlog

    def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` until every op is in MLflow. False if some still wait (queued,
        in flight or spooled)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._next_retry = time.monotonic()  # an explicit flush asks for a retry now
            self._cond.notify()
            while self._queue or self._busy or self._backlog:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def close(self, timeout_s: float) -> int:
        """Send what can be sent within ``timeout_s``, spool the rest, stop the thread. Returns how
        many ops are left in the spool file for a later replay."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        # Normally empty. Left when the thread is stuck in a network call longer than its timeout
        # (the call in flight lands in the spool itself if it fails before the process exits).
        with self._cond:
            leftover, self._queue = self._queue, []
        self._spool_or_hold(leftover)
        if self._held:
            log.warning("%d tracking calls lost: %s cannot be written", len(self._held), self.spool.path)
        return self.spool.pending()

    # -- the thread -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop and not self._retry_due():
                    wait = max(self._next_retry - time.monotonic(), 0.01) if self._backlog else None
                    self._cond.wait(wait)
                batch, self._queue = self._queue, []
                stopping = self._stop
                self._busy = True
            try:
                self._handle(batch)
            except Exception as e:  # noqa: BLE001 - a bug here must not kill the thread, nor training
                log.warning("tracking sender error; up to %d tracking calls may be lost: %s", len(batch),
                            short_error(e))
                self._enter_backlog(e)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
            if stopping:
                with self._cond:
                    if not self._queue:
                        return

    def _retry_due(self) -> bool:
        return self._backlog and time.monotonic() >= self._next_retry

    def _handle(self, batch: list[dict[str, Any]]) -> None:
        if self._backlog:
            self._spool_or_hold(batch)  # behind what already waits on disk
            if self._retry_due() and not self._held:  # held ops must reach the file before a replay
                self._replay()
            elif self._held:
                self._enter_backlog(None)
            return
        done, error = send_ops(self.backend, batch, self._drop)
        if self.backend.run_id:
            self.started.set()
        if error is not None:
            self._spool_or_hold(batch[done:])
            self._enter_backlog(error)

    def _spool_or_hold(self, ops: list[dict[str, Any]]) -> None:
        """Append ops (after any held back earlier) to the spool; on a write error (disk full) keep
        them in memory and try again with the next batch or retry."""
        ops = self._held + ops
        try:
            self.spool.append(ops)
        except OSError as e:
            self._held = ops
            if not self._disk_warned:
                self._disk_warned = True
                log.warning("cannot write the tracking spool %s (%s): %d calls kept in memory",
                            self.spool.path, short_error(e), len(ops))
            return
        self._held = []

    def _replay(self) -> None:
        try:
            sent, left, error = replay_spool(self.backend, self.spool, self._drop)
        except OSError as e:  # the spool could not be read or rewritten: try again later
            self._enter_backlog(e)
            return
        if self.backend.run_id:
            self.started.set()
        if error is not None or left:
            self._enter_backlog(error)
            return
        self._backlog = False
        self._delay = self.retry_initial_s
        if self._in_outage:
            self._in_outage = False
            log.info("MLflow at %s answers again: %d buffered tracking calls sent",
                     display_uri(self.backend.tracking_uri), sent)
        elif sent:
            log.info("sent %d tracking calls that waited in %s", sent, self.spool.path)

    def _enter_backlog(self, error: BaseException | None) -> None:
        self._backlog = True
        self._next_retry = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, self.retry_max_s)
        self.started.set()  # nobody should wait for a run id that may take minutes to appear
        if not self._in_outage:
            self._in_outage = True
            log.warning("MLflow at %s is not answering (%s): training goes on; tracking calls are kept in "
                        "%s and sent when it answers (or by `unigen runs --sync`)",
                        display_uri(self.backend.tracking_uri),
                        short_error(error) if error else "unknown error", self.spool.path)

    def _drop(self, group: list[dict[str, Any]], error: BaseException) -> None:
        self.dropped += len(group)
        log.warning("MLflow rejected a tracking call (%s, %d op(s)); dropped: %s", group[0].get("op"), len(group),
                    short_error(error))


def open_sender(ledger: RunLedger, record: Mapping[str, Any], tracking_uri: str | None) -> Sender:
    """A sender (not started yet) for the run of ``ledger`` (``record``: its run.json), to the run's store
    (``store.run_tracking_uri``), with short HTTP timeouts."""
    root = ledger.paths.root
    uri = run_tracking_uri(record, tracking_uri, root.resolve().parent, root)
    apply_http_timeouts()
    return Sender(MlflowBackend(root, uri), Spool(spool_path(root)))
