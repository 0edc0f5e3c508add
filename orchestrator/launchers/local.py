"""The local launcher: every rank of a run as a child process of one supervisor on this machine.

The supervisor owns the attempt loop that a scheduler owns on a cluster; it is the Ray driver's loop
(``attempts.RunAttempts``, ``attempts.run_stages``: stages in order, one attempt after another) over a
``LocalGroup`` of child processes. What each exit code leads to is ``attempt_policy``'s rule, with
``local.max_restarts`` as the restart budget. SIGTERM/SIGINT to the supervisor cancels: the ranks get
SIGTERM, save and exit 75, and the run is marked cancelled.
Torch-free: ranks import the heavy stack, the supervisor does not.

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
from pathlib import Path
from typing import Callable, Sequence

from unigen.orchestrator.config.recorded import recorded_profile
from unigen.orchestrator.config.world import world_of
from unigen.orchestrator.launchers import LOG_FORMAT
from unigen.orchestrator.launchers.attempt_policy import CANCEL_GRACE_S
from unigen.orchestrator.launchers.attempts import (RankSlot, RunAttempts, Settings, WorkerInfo, parent_death_signal,
                                                    run_stages)
from unigen.orchestrator.runs import ACTIVE, RunLedger

log = logging.getLogger("unigen.launcher")


class LocalSupervisor:
    """Runs the attempts of one or more runs (stages) on this machine."""

    def __init__(self, run_dirs: list[Path], *, on_tick: Callable[[RunLedger], None] | None = None,
                 rank_command: list[str] | None = None):
        self.run_dirs = [Path(d) for d in run_dirs]
        self.on_tick = on_tick
        self.rank_command = rank_command  # instead of the runtime, followed by the run folder (tests)
        self._cancel = False

    # -- signals --------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        # Only a flag: the attempt loop sends SIGTERM to the ranks once (a second one could reach a rank
        # that is already exiting, with default handlers, and lose its exit code).
        if not self._cancel:
            log.warning("signal %d: asking ranks to save and stop", signum)
        self._cancel = True

    def run(self) -> int:
        """Run every stage in order; 0 when all completed."""
        return run_stages([RunLedger(d) for d in self.run_dirs], self._attempts, stopping=lambda: self._cancel,
                          driver="the local supervisor")

    def _attempts(self, ledger: RunLedger) -> RunAttempts:
        profile = recorded_profile(ledger.read())
        world = world_of(profile).size  # one rank per visible GPU, else local.cpu_ranks
        env = dict(profile.env)
        threads = {**os.environ, **env}.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // world))
        settings = Settings(job_id=f"local:{os.getpid()}", gpus=False, max_failures=profile.local.max_restarts,
                            cancel_grace_s=CANCEL_GRACE_S, cwd=_workdir(ledger),
                            env={**env, "OMP_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}, poll_s=0.2,
                            budget="local.max_restarts", waiting_for="ranks", job_label="supervisor",
                            on_tick=self.on_tick)
        visible = {**os.environ, **env}.get("CUDA_VISIBLE_DEVICES")
        return RunAttempts(ledger, lambda: LocalGroup(ledger, world_of(profile).size, visible, self.rank_command),
                           settings, stopping=lambda: self._cancel)


class LocalGroup:
    """The ranks of one attempt as child processes of the supervisor (an ``attempts.RankGroup``).
    Each rank leads its own process group (with its loader workers) and sees the GPUs the supervisor sees
    (``visible``: CUDA_VISIBLE_DEVICES of the supervisor or the profile's env; LOCAL_RANK picks one)."""

    def __init__(self, ledger: RunLedger, world: int, visible: str | None = None, command: list[str] | None = None):
        self.ledger, self.world, self.visible = ledger, world, visible
        self.command = command or [sys.executable, "-m", "unigen.orchestrator.runtime"]
        self.procs: list[subprocess.Popen] = []

    def place(self, should_stop: Callable[[], bool]) -> list[WorkerInfo] | None:
        return [WorkerInfo(rank, "local", "127.0.0.1", socket.gethostname()) for rank in range(self.world)]

    def free_port(self) -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def missing_paths(self, paths: list[str]) -> list[str]:
        return []

    def start(self, slots: Sequence[RankSlot], *, run_dir: str, cwd: str | None, header: str) -> list[dict]:
        self.ledger.paths.logs.mkdir(parents=True, exist_ok=True)
        # SIGTERM when the supervisor dies (even by SIGKILL): orphaned ranks save and stop instead of training on.
        on_parent_death = parent_death_signal(signal.SIGTERM)
        for slot in slots:
            env = {**os.environ, **slot.env}
            env.pop("CUDA_VISIBLE_DEVICES", None)  # rank_layout's (it hides GPUs from CPU ranks)
            if self.visible is not None:
                env["CUDA_VISIBLE_DEVICES"] = self.visible
            with open(self.ledger.paths.rank_log(slot.rank), "ab") as out:
                out.write(f"\n===== {header} rank {slot.rank} =====\n".encode())
                out.flush()
                self.procs.append(subprocess.Popen(
                    [*self.command, run_dir],
                    env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, preexec_fn=on_parent_death))
        return [{"pid": p.pid, "host": socket.gethostname()} for p in self.procs]

    def poll(self) -> list[int | None]:
        return [p.poll() for p in self.procs]

    def signal(self, signum: int) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signum)  # each rank leads its own process group (its loader workers)
                except ProcessLookupError:
                    pass

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def release(self) -> None:
        self.kill()
        for p in self.procs:
            p.wait()


class LocalLauncher:
    """``launcher: local``: the supervisor above, attached (``--wait``) or as a detached process."""

    name = "local"

    def launch(self, ledgers: list[RunLedger], sub, *, wait: bool) -> int:
        dirs = [ledger.paths.root for ledger in ledgers]
        if wait:
            return self._attached(ledgers, dirs)
        with open(ledgers[0].paths.logs / "supervisor.out", "ab") as out:
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
        if record["status"] in ACTIVE:
            ledger.set_status("cancelled", error="cancelled; its supervisor was no longer running")
            return f"{record['run_id']} marked cancelled (no supervisor was running)"
        return f"{record['run_id']} is {record['status']}: nothing to cancel"

    def holds(self, record: dict) -> bool:
        sup = record.get("supervisor") or {}
        if record.get("status") not in ACTIVE:
            return False
        if sup.get("host") not in (None, socket.gethostname()):
            return True  # another machine's supervisor: assume it still runs
        return bool(sup.get("pid")) and _alive(sup["pid"])

    def scheduler_state(self, record: dict) -> str | None:
        sup = record.get("supervisor") or {}
        if record.get("status") in ACTIVE and sup.get("host") == socket.gethostname() and sup.get("pid") \
                and not _alive(sup["pid"]):
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
        ledger.set_launcher_info("supervisor", {"pid": pid, "host": socket.gethostname()})


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
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    sup = LocalSupervisor(sys.argv[1:] if argv is None else argv)
    sup.install_signal_handlers()
    return sup.run()


if __name__ == "__main__":
    sys.exit(main())
