"""The local launcher: every rank of a run as a child process of one supervisor on this machine.

The supervisor owns the attempt loop that a scheduler owns on a cluster:
- all ranks exit 0                   -> the run is completed;
- a rank exits EXIT_REQUEUE (75)     -> it saved a committed checkpoint on a preemption signal: start
                                        the next attempt at once (it resumes from that checkpoint);
- a rank dies any other way          -> stop the others, and restart from the newest committed
                                        checkpoint while ``local.max_restarts`` allows;
- the supervisor gets SIGTERM/SIGINT -> forward SIGTERM (ranks save and exit 75), mark cancelled.

Stages of a multi-stage submission run one after the other; a stage starts only when the previous
one completed. Torch-free: ranks import the heavy stack, the supervisor does not.

Usage (what ``unigen submit`` starts when it does not --wait)::

    python -m unigen.orchestrator.launchers.local RUN_DIR [RUN_DIR ...]
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from unigen.orchestrator.runs import RunLedger
from unigen.orchestrator.exitcodes import EXIT_FATAL, EXIT_REQUEUE

log = logging.getLogger("unigen.launcher")

# A rank that crashes leaves its peers blocked in a collective; give them this long to notice (their
# own exit) before they are stopped.
PEER_GRACE_S = 10.0
# After a cancel, ranks save a checkpoint before exiting; a save of a big model takes a while.
CANCEL_GRACE_S = 300.0
MAX_REQUEUES = 1000  # a loop guard, not a budget: every requeue follows a committed checkpoint


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_world_size(profile: dict) -> int:
    """One rank per visible GPU, else the profile's CPU rank count (the rule of config.world_of)."""
    from unigen.orchestrator.config.world import visible_gpus

    local = profile.get("local") or {}
    gpus = visible_gpus()
    if gpus and (local.get("backend") or "auto") != "gloo":
        return gpus
    return int(local.get("cpu_ranks") or 2)


@dataclass
class AttemptResult:
    exit_reason: str  # completed | requeue | crashed | fatal (a user error: never restarted)
    exit_codes: list[int]


class LocalSupervisor:
    """Runs the attempts of one or more runs (stages) on this machine."""

    def __init__(self, run_dirs: list[Path], *, on_tick: Callable[[RunLedger], None] | None = None):
        self.run_dirs = [Path(d) for d in run_dirs]
        self.on_tick = on_tick
        self._cancel = False
        self._procs: list[subprocess.Popen] = []

    # -- signals --------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        if not self._cancel:
            log.warning("signal %d: asking ranks to save and stop", signum)
        self._cancel = True
        self._signal_ranks(signal.SIGTERM)

    def _signal_ranks(self, sig: int) -> None:
        for p in self._procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, sig)  # each rank leads its own process group (its loader workers)
                except ProcessLookupError:
                    pass

    # -- main loop ------------------------------------------------------------------------------
    def run(self) -> int:
        """Run every stage in order; 0 when all completed."""
        for i, run_dir in enumerate(self.run_dirs):
            ledger = RunLedger(run_dir)
            if self._cancel:
                ledger.set_status("cancelled", error="cancelled before it started")
                continue
            if i and RunLedger(self.run_dirs[i - 1]).read()["status"] != "completed":
                prev = RunLedger(self.run_dirs[i - 1]).read()["run_id"]
                ledger.set_status("cancelled", error=f"not started: the previous stage {prev} did not complete")
                continue
            self._run_one(ledger)
        statuses = [RunLedger(d).read()["status"] for d in self.run_dirs]
        return 0 if all(s == "completed" for s in statuses) else 1

    def _run_one(self, ledger: RunLedger) -> None:
        handler = logging.FileHandler(ledger.paths.logs / "launcher.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        try:
            self._attempts(ledger)
        finally:
            log.removeHandler(handler)
            handler.close()

    def _attempts(self, ledger: RunLedger) -> None:
        record = ledger.read()
        profile = record["profile"]
        max_restarts = int((profile.get("local") or {}).get("max_restarts", 3))
        crashes = requeues = 0
        while True:
            attempt = ledger.start_attempt(job_id=f"local:{os.getpid()}", nodes=socket.gethostname())
            log.info("%s: attempt %d starting", record["run_id"], attempt)
            result = self._attempt(ledger, attempt, profile)
            if result.exit_reason == "completed":
                ledger.end_attempt(exit_reason="completed", exit_code=0, status="completed")
                return
            if self._cancel:
                ledger.end_attempt(exit_reason="cancelled", exit_code=_worst(result.exit_codes), status="cancelled")
                return
            if result.exit_reason == "requeue" and requeues < MAX_REQUEUES:
                requeues += 1
                ledger.end_attempt(exit_reason="requeue", exit_code=EXIT_REQUEUE, status="requeued")
                continue
            crashes += 1
            if result.exit_reason != "fatal" and crashes <= max_restarts:
                log.warning("%s: attempt %d crashed (exit codes %s); restart %d of %d from the last checkpoint",
                            record["run_id"], attempt, result.exit_codes, crashes, max_restarts)
                ledger.end_attempt(exit_reason="crashed", exit_code=_worst(result.exit_codes), status="requeued")
                continue
            ledger.end_attempt(exit_reason="crashed", exit_code=_worst(result.exit_codes), status="failed")
            ledger.update(lambda r: r.__setitem__("error", r.get("error") or
                                                  f"crashed {crashes} times; see {ledger.paths.logs}/rank-*.log"))
            return

    def _attempt(self, ledger: RunLedger, attempt: int, profile: dict) -> AttemptResult:
        world = local_world_size(profile)
        port = free_port()
        threads = max(1, (os.cpu_count() or 1) // world)
        env_base = dict(os.environ)
        env_base.update({str(k): str(v) for k, v in (profile.get("env") or {}).items()})
        env_base.update({"WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                         "UNIGEN_ATTEMPT": str(attempt), "UNIGEN_JOB_ID": f"local:{os.getpid()}",
                         "OMP_NUM_THREADS": env_base.get("OMP_NUM_THREADS", str(threads)),
                         "PYTHONUNBUFFERED": "1"})
        ledger.paths.logs.mkdir(parents=True, exist_ok=True)
        workdir = _workdir(ledger)
        self._procs = []
        for rank in range(world):
            env = dict(env_base, RANK=str(rank), LOCAL_RANK=str(rank))
            with open(ledger.paths.rank_log(rank), "ab") as out:
                out.write(f"\n===== attempt {attempt} rank {rank} =====\n".encode())
                out.flush()
                self._procs.append(subprocess.Popen(
                    [sys.executable, "-m", "unigen.orchestrator.runtime", str(ledger.paths.root)],
                    env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, preexec_fn=_term_when_parent_dies))
        pids = [p.pid for p in self._procs]  # operators (and tests) signal ranks by these
        ledger.update(lambda r: r["attempts"][-1].__setitem__("pids", pids))
        if self._cancel:  # a signal arrived while we were starting them
            self._signal_ranks(signal.SIGTERM)
        codes = self._wait_all(ledger)
        if all(c == 0 for c in codes):
            return AttemptResult("completed", codes)
        if all(c in (0, EXIT_REQUEUE) for c in codes):
            return AttemptResult("requeue", codes)
        if EXIT_FATAL in codes:
            return AttemptResult("fatal", codes)
        return AttemptResult("crashed", codes)

    def _wait_all(self, ledger: RunLedger) -> list[int]:
        first_failure: float | None = None
        cancel_seen: float | None = None
        while True:
            codes = [p.poll() for p in self._procs]
            if all(c is not None for c in codes):
                return [int(c) for c in codes]
            now = time.monotonic()
            failed = [c for c in codes if c not in (None, 0, EXIT_REQUEUE)]
            if failed and first_failure is None:
                first_failure = now
            if self._cancel and cancel_seen is None:
                cancel_seen = now
            if (first_failure and now - first_failure > PEER_GRACE_S) or \
               (cancel_seen and now - cancel_seen > CANCEL_GRACE_S):
                self._signal_ranks(signal.SIGKILL)
            if self.on_tick:
                self.on_tick(ledger)
            time.sleep(0.2)


def _term_when_parent_dies() -> None:
    """In the child before exec: SIGTERM it when the supervisor dies (even by SIGKILL), so orphaned
    ranks save a checkpoint and stop instead of training on unwatched. Linux only; elsewhere a no-op."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worst(codes: list[int]) -> int:
    bad = [c for c in codes if c != 0]
    return bad[0] if bad else 0


class LocalLauncher:
    """``launcher: local``: the supervisor above, attached (``--wait``) or as a detached process."""

    name = "local"

    def launch(self, ledgers: list[RunLedger], sub, *, wait: bool) -> int:
        dirs = [ledger.paths.root for ledger in ledgers]
        if wait:
            return self._attached(ledgers, dirs)
        out = open(ledgers[0].paths.logs / "supervisor.out", "ab")
        with out:
            proc = subprocess.Popen([sys.executable, "-m", "unigen.orchestrator.launchers.local", *map(str, dirs)],
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)  # survives the terminal that submitted it
        _record_supervisor(ledgers, proc.pid)
        print(f"submitted {len(ledgers)} run(s) to a local supervisor (pid {proc.pid}); follow with "
              f"`unigen status {ledgers[-1].run_id}` or `unigen logs {ledgers[0].run_id} --follow`")
        return 0

    def _attached(self, ledgers: list[RunLedger], dirs: list[Path]) -> int:
        from unigen.orchestrator.launchers.progress import ProgressView, print_outcome

        _record_supervisor(ledgers, os.getpid())
        with ProgressView() as view:
            sup = LocalSupervisor(dirs, on_tick=view.tick)
            sup.install_signal_handlers()
            code = sup.run()
            for ledger in ledgers:
                view.tick(ledger, force=True)
        print_outcome(ledgers)
        return code

    def describe(self, sub) -> str:
        return (f"local launcher: {sub.world_size} rank(s) per stage on this machine, each "
                f"`{Path(sys.executable).name} -m unigen.orchestrator.runtime <run folder>` with RANK=0..{sub.world_size - 1}, "
                "MASTER_ADDR=127.0.0.1 and a free MASTER_PORT; stages run one after the other")

    def cancel(self, ledger: RunLedger) -> str:
        record = ledger.read()
        sup = record.get("supervisor") or {}
        pid = sup.get("pid")
        if pid and sup.get("host") == socket.gethostname() and _alive(pid):
            os.kill(pid, signal.SIGTERM)  # it forwards SIGTERM: ranks save a checkpoint, then stop
            return f"asked the local supervisor (pid {pid}) to stop {record['run_id']}: it saves a checkpoint first"
        if record["status"] in ("queued", "running", "requeued"):
            ledger.set_status("cancelled", error="cancelled; its supervisor was no longer running")
            return f"{record['run_id']} marked cancelled (no supervisor was running)"
        return f"{record['run_id']} is {record['status']}: nothing to cancel"

    def holds(self, record: dict) -> bool:
        sup = record.get("supervisor") or {}
        if sup.get("host") not in (None, socket.gethostname()):
            return record.get("status") in ("queued", "running", "requeued")  # another machine's: assume so
        return bool(sup.get("pid")) and _alive(sup["pid"]) and record.get("status") in ("queued", "running", "requeued")

    def scheduler_state(self, record: dict) -> str | None:
        sup = record.get("supervisor") or {}
        if record.get("status") in ("queued", "running", "requeued") and sup.get("host") == socket.gethostname() \
                and sup.get("pid") and not _alive(sup["pid"]):
            return "supervisor gone"
        return None


def _workdir(ledger: RunLedger) -> str | None:
    """The folder `unigen submit` ran in, where the ranks start (relative data paths resolve from there,
    also when `unigen resume` runs elsewhere); the current one if it is gone or was never recorded."""
    workdir = ledger.read().get("workdir")
    if workdir and Path(workdir).is_dir():
        return workdir
    if workdir:
        log.warning("%s: submit folder %s is gone; ranks start in %s (relative data paths may fail)",
                    ledger.run_id, workdir, os.getcwd())
    return None


def _record_supervisor(ledgers: list[RunLedger], pid: int) -> None:
    for ledger in ledgers:
        ledger.update(lambda r: r.__setitem__("supervisor", {"pid": pid, "host": socket.gethostname()}))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


LAUNCHER = LocalLauncher()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sup = LocalSupervisor([Path(a) for a in argv])
    sup.install_signal_handlers()
    return sup.run()


if __name__ == "__main__":
    sys.exit(main())
