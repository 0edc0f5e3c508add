"""The attempt loop shared by the local and Ray launchers: it drives any ``RankGroup`` (the Ray driver's
actors in ``ray.group``, the local supervisor's child processes in ``local``) and is free of Ray.

Per run (stage), until it ends:
- place the workers (waiting for resources; a cancel while waiting ends the run as cancelled);
- start an attempt: run.json gets job id, nodes, and each rank's host and pid;
- watch the ranks: when one ends badly the others get ``peer_grace_s`` to notice (a rank blocked in
  a collective often exits by itself), then the group is killed;
- what the exit codes mean and what follows (complete, next attempt, give up) is ``attempt_policy``,
  with ``Settings.max_failures`` as the restart budget; a next attempt resumes by itself from the
  newest committed checkpoint;
- a cancel (``cancel_requested`` in run.json, written by ``unigen cancel``, or SIGTERM to the driver
  from ``ray job stop``): SIGTERM to every rank, they save and exit 75, the run is cancelled;
  after ``cancel_grace_s`` what is left is killed.

Stages run in order; a stage starts only when the one before it completed.
"""
from __future__ import annotations

import ctypes
import logging
import signal
import time
from dataclasses import dataclass, replace
from typing import Callable, Protocol, Sequence

from unigen.orchestrator.exitcodes import EXIT_FATAL
from unigen.orchestrator.launchers import LOG_FORMAT, attempt_policy as policy
from unigen.orchestrator.launchers.attempt_policy import LOST, PEER_GRACE_S, Outcome, classify, describe_code, first_failure
from unigen.orchestrator.runs import TERMINAL, RunLedger, now_iso
from unigen.orchestrator.secrets import ScrubFilter, scrub

log = logging.getLogger("unigen.launcher")

LEDGER_READ_S = 1.0  # how often the driver looks for a cancel request in run.json
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerInfo:
    """Where one placed worker (a Ray actor in bundle ``bundle``) landed."""

    bundle: int
    node_id: str
    node_ip: str
    hostname: str
    gpu_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class RankSlot:
    """One rank of an attempt: the worker that runs it and the variables that make it that rank."""

    rank: int
    worker: WorkerInfo
    env: dict[str, str]


def rank_layout(workers: Sequence[WorkerInfo], *, master_port: int, gpus: bool) -> list[RankSlot]:
    """Ranks for the placed workers, grouped by node so that LOCAL_RANK counts 0.. on every node.

    The first worker's node (bundle 0) hosts rank 0 and the rendezvous (MASTER_ADDR, with a port
    that was found free there). Ray gives each GPU worker only its own GPU in CUDA_VISIBLE_DEVICES,
    but the runtime picks ``cuda:LOCAL_RANK``; so, as Ray Train does, every rank on a node sees the
    GPUs of all workers on that node, in local-rank order, and LOCAL_RANK indexes its own.
    """
    if not workers:
        raise ValueError("rank_layout needs at least one worker")
    node_order: dict[str, int] = {}
    for w in sorted(workers, key=lambda w: w.bundle):
        node_order.setdefault(w.node_id, len(node_order))
    ordered = sorted(workers, key=lambda w: (node_order[w.node_id], w.bundle))
    by_node = {node: [w for w in ordered if w.node_id == node] for node in node_order}
    master = ordered[0]
    slots = []
    for rank, w in enumerate(ordered):
        peers = by_node[w.node_id]
        env = {"RANK": str(rank), "WORLD_SIZE": str(len(ordered)), "LOCAL_RANK": str(peers.index(w)),
               "LOCAL_WORLD_SIZE": str(len(peers)), "NODE_RANK": str(node_order[w.node_id]),
               "MASTER_ADDR": master.node_ip, "MASTER_PORT": str(master_port)}
        if gpus:
            missing = [p.bundle for p in peers if not p.gpu_ids]
            if missing:
                raise ValueError(f"workers in bundles {missing} were given no GPU by Ray")
            env["CUDA_VISIBLE_DEVICES"] = ",".join(p.gpu_ids[0] for p in peers)
        else:
            # CPU ranks train over gloo even on a node with GPUs.
            env["CUDA_VISIBLE_DEVICES"] = ""
        slots.append(RankSlot(rank, w, env))
    return slots


def parent_death_signal(sig: int) -> Callable[[], None] | None:
    """A preexec_fn that has the kernel send ``sig`` to the child when its parent dies, even by SIGKILL
    (PR_SET_PDEATHSIG); None where prctl is missing (Linux only). The libc lookup happens here, before
    fork: the child must do as little as possible."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


class RankGroup(Protocol):
    """The workers of one attempt (Ray actors in a placement group, in ``ray.group``)."""

    def place(self, should_stop: Callable[[], bool]) -> list[WorkerInfo] | None:
        """Reserve and start the workers; None when ``should_stop`` turned true while waiting."""

    def free_port(self) -> int:
        """A free port on the node of the first worker (rank 0's rendezvous)."""

    def missing_paths(self, paths: list[str]) -> list[str]:
        """'<host>: <path>' for every path some worker cannot see."""

    def start(self, slots: Sequence[RankSlot], *, run_dir: str, cwd: str | None, header: str) -> list[dict]:
        """Start one rank per slot; returns per rank {pid, host, ...}."""

    def poll(self) -> list[int | None]:
        """Exit code per rank (None: running, attempt_policy.LOST: the worker vanished)."""

    def signal(self, signum: int) -> None:
        """Send a signal to every rank still running."""

    def kill(self) -> None:
        """SIGKILL every rank (and what it started)."""

    def release(self) -> None:
        """Stop the workers and give their resources back."""


@dataclass
class Settings:
    job_id: str
    gpus: bool
    max_failures: int
    cancel_grace_s: float
    cwd: str | None = None
    env: dict[str, str] | None = None
    peer_grace_s: float = PEER_GRACE_S
    poll_s: float = 0.5
    budget: str = "ray.max_failures"  # the profile setting max_failures comes from (in messages)
    waiting_for: str = "Ray workers"  # what place() waits for (in messages)
    job_label: str = "ray job"  # what job_id is (in the rank logs' attempt header)
    on_tick: Callable[[RunLedger], None] | None = None  # called at every poll while ranks run


class RunAttempts:
    """Every attempt of one run, until it completes, fails or is cancelled."""

    def __init__(self, ledger: RunLedger, make_group: Callable[[], RankGroup], settings: Settings,
                 stopping: Callable[[], bool] = lambda: False):
        self.ledger = ledger
        self.make_group = make_group
        self.s = settings
        self.stopping = stopping  # the driver itself was asked to stop (ray job stop)
        self._cancel_seen = False
        self._last_read = 0.0

    def cancelled(self) -> bool:
        """A stop of the driver, or ``cancel_requested`` in run.json (checked at most every second)."""
        if self._cancel_seen or self.stopping():
            self._cancel_seen = True
            return True
        now = time.monotonic()
        if now - self._last_read >= LEDGER_READ_S:
            self._last_read = now
            try:
                self._cancel_seen = bool(self.ledger.read().get("cancel_requested"))
            except ValueError:  # being rewritten this instant
                pass
        return self._cancel_seen

    def run(self) -> str:
        """Run attempts until the run ends; returns its final status."""
        run_id = self.ledger.run_id
        restarts = requeues = 0
        while True:
            if self.cancelled():
                self.ledger.set_status("cancelled", error="cancelled")
                return "cancelled"
            group = self.make_group()
            try:
                outcome = self._attempt(group, run_id)
            finally:
                group.release()
            if outcome is None:  # cancelled while waiting for workers: no attempt was started
                self.ledger.set_status("cancelled", error=f"cancelled while waiting for {self.s.waiting_for}")
                return "cancelled"
            d = policy.decide(outcome, restarts_used=restarts, requeues_used=requeues,
                              max_restarts=self.s.max_failures, cancelled=self._cancel_seen)
            restarts, requeues = d.restarts, d.requeues
            if d.action == "cancel":
                saved = "every rank saved a checkpoint first" if outcome.reason == "requeue" else outcome.detail
                outcome = replace(outcome, detail=f"cancelled: {saved}")
            elif d.action == "requeue":
                log.info("%s: every rank saved and asked to be restarted: next attempt now", run_id)
            elif d.action == "restart":
                log.warning("%s: attempt crashed (%s); restart %d of %d from the last committed checkpoint",
                            run_id, outcome.detail, restarts, self.s.max_failures)
            elif d.over == "fatal":
                log.error("%s: %s: a user error, not restarted (see run.json error)", run_id, outcome.detail)
            self._end(d.exit_reason, outcome, d.status)
            if d.again:
                continue
            if d.over == "fatal":
                self._set_error(f"failed: {outcome.detail}; see {self.ledger.paths.logs}/rank-*.log")
            elif d.over == "requeues":
                self._set_error(f"requeued {requeues} times, more than the loop guard of {policy.MAX_REQUEUES}")
            elif d.over:
                self._set_error(f"crashed {restarts} times ({self.s.budget}={self.s.max_failures}), last: "
                                f"{outcome.detail}; see {self.ledger.paths.logs}/rank-*.log")
            return d.status

    # -- one attempt ------------------------------------------------------------------------------
    def _attempt(self, group: RankGroup, run_id: str) -> Outcome | None:
        try:
            workers = group.place(self.cancelled)
        except Exception as e:  # noqa: BLE001 - a worker that cannot start is a failure like any other
            log.warning("%s: the workers did not start: %s: %s", run_id, type(e).__name__, e)
            return Outcome("crashed", (), scrub(f"workers did not start: {type(e).__name__}: {e}")[:300], LOST)
        if workers is None:
            return None
        run_dir = str(self.ledger.paths.root)
        missing = group.missing_paths([run_dir])
        if missing:
            # Nothing can be recorded from those nodes: fail now with the fix instead of crash-looping.
            self._set_error(f"the run folder is not visible on every Ray node ({'; '.join(missing)}): put "
                            "storage.run_root on storage shared by the submitter and all nodes")
            return Outcome("fatal", (), f"run folder missing on {', '.join(missing)}", EXIT_FATAL)
        slots = rank_layout(workers, master_port=group.free_port(), gpus=self.s.gpus)
        nodes = ",".join(dict.fromkeys(slot.worker.hostname for slot in slots))
        attempt = self.ledger.start_attempt(job_id=self.s.job_id, nodes=nodes)
        self.ledger.set_error(None)  # the last attempt's, kept in it
        extra = {**(self.s.env or {}), "UNIGEN_ATTEMPT": str(attempt), "UNIGEN_JOB_ID": self.s.job_id}
        slots = [RankSlot(s.rank, s.worker, {**extra, **s.env}) for s in slots]
        log.info("%s: attempt %d on %s (MASTER_ADDR=%s)", run_id, attempt, nodes, slots[0].env["MASTER_ADDR"])
        header = f"attempt {attempt} ({self.s.job_label} {self.s.job_id})"
        try:
            started = group.start(slots, run_dir=run_dir, cwd=self.s.cwd, header=header)
        except Exception as e:  # noqa: BLE001 - e.g. an actor died between placement and start
            log.warning("%s: the ranks did not start: %s: %s", run_id, type(e).__name__, e)
            return Outcome("crashed", (), scrub(f"ranks did not start: {type(e).__name__}: {e}")[:300], LOST)
        ranks = [{"rank": s.rank, "host": info.get("host"), "ip": s.worker.node_ip, "pid": info.get("pid")}
                 for s, info in zip(slots, started)]
        # "pids" as the local launcher records them; "ranks" adds where each one runs.
        self.ledger.update_last_attempt(ranks=ranks, pids=[x["pid"] for x in ranks])
        return self._watch(group, run_id)

    def _watch(self, group: RankGroup, run_id: str) -> Outcome:
        failed_at = cancel_at = first_bad = None
        killed = False
        while True:
            codes = group.poll()
            if all(c is not None for c in codes):
                cause = first_bad if first_bad is not None else first_failure(codes)
                return classify(codes, cause)  # type: ignore[arg-type]
            now = time.monotonic()
            bad = first_failure(codes)
            if bad is not None and failed_at is None:
                failed_at, first_bad = now, bad
                log.warning("%s: rank %d %s; stopping the group in %.0f s unless it ends by itself",
                            run_id, bad, describe_code(codes[bad]), self.s.peer_grace_s)  # type: ignore[arg-type]
            if cancel_at is None and self.cancelled():
                cancel_at = now
                log.warning("%s: cancel requested: asking every rank to save a checkpoint and stop", run_id)
                group.signal(signal.SIGTERM)
            if not killed and ((failed_at is not None and now - failed_at > self.s.peer_grace_s)
                               or (cancel_at is not None and now - cancel_at > self.s.cancel_grace_s)):
                killed = True
                group.kill()
            if self.s.on_tick:
                self.s.on_tick(self.ledger)
            time.sleep(self.s.poll_s)

    # -- ledger ---------------------------------------------------------------------------------
    def _end(self, reason: str, outcome: Outcome, status: str) -> None:
        def change(r: dict) -> None:
            attempt = r["attempts"][-1] if r["attempts"] else None
            if attempt is not None and attempt["ended_at"] is None and r.get("error"):
                attempt["error"] = r["error"]  # the attempt keeps its crash message ...
            if status == "completed":
                r["error"] = None  # ... and a run that then completed shows none

        self.ledger.update(change)
        self.ledger.end_attempt(exit_reason=reason, exit_code=outcome.exit_code, status=status,
                                exit_codes=list(outcome.codes), detail=outcome.detail)

    def _set_error(self, message: str) -> None:
        # The runtime's own message (a user error, a crash) is more precise: keep it when there is one.
        self.ledger.set_error(message, keep_first=True)


def run_stages(ledgers: Sequence[RunLedger], make_attempts: Callable[[RunLedger], RunAttempts], *,
               stopping: Callable[[], bool] = lambda: False, driver: str = "the Ray driver") -> int:
    """Run the stages in order; 0 when every one completed. ``driver`` names what runs the loop in the
    message of a run it failed (the Ray driver, the local supervisor)."""
    previous: RunLedger | None = None
    for ledger in ledgers:
        record = ledger.read()
        if record["status"] in TERMINAL:
            log.info("%s is already %s: skipped", record["run_id"], record["status"])
        elif stopping() or record.get("cancel_requested"):
            ledger.set_status("cancelled", error="cancelled before it started")
        elif previous is not None and previous.read()["status"] != "completed":
            ledger.set_status("cancelled", error=f"not started: the previous stage {previous.run_id} did not complete")
        else:
            _run_stage(ledger, make_attempts, driver)
        previous = ledger
    return 0 if all(ledger.read()["status"] == "completed" for ledger in ledgers) else 1


def _run_stage(ledger: RunLedger, make_attempts: Callable[[RunLedger], RunAttempts], driver: str) -> None:
    """The attempts of one stage. The driver's lines about the run also go to its logs/launcher.log
    (`unigen logs` shows them). A bug or a Ray failure in the driver ends the run as failed (with the
    reason in run.json) instead of leaving it "running" forever; the next stages are then not started."""
    handler = logging.FileHandler(ledger.paths.logs / "launcher.log")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(ScrubFilter())
    log.addHandler(handler)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)  # launcher.log always tells the attempts, whatever the root logger says
    log.info("%s: driver started at %s", ledger.run_id, now_iso())
    try:
        make_attempts(ledger).run()
    except Exception as e:  # noqa: BLE001 - recorded, then the driver goes on to the next stage
        log.exception("%s: %s failed", ledger.run_id, driver)
        message = scrub(f"{driver} failed: {type(e).__name__}: {e}")[:500]
        ledger.end_attempt(exit_reason="lost", exit_code=None, status="failed", detail=message)
        ledger.set_error(message, keep_first=True)
    finally:
        log.removeHandler(handler)
        handler.close()
