"""One SLURM task = one rank: ``python -m unigen.orchestrator.launchers.slurm.task RUN_DIR ATTEMPT_DIR``.

srun starts this once per rank. It turns SLURM's view of the task into the runtime contract and
runs the per-rank runtime (``python -m unigen.orchestrator.runtime RUN_DIR``) as its child:
- RANK = SLURM_PROCID, WORLD_SIZE = SLURM_NTASKS, LOCAL_RANK = SLURM_LOCALID (MASTER_ADDR,
  MASTER_PORT, UNIGEN_ATTEMPT, UNIGEN_JOB_ID come from the driver through srun's environment);
  OMP_NUM_THREADS defaults to the task's CPUs;
- the child's stdout and stderr are appended to RUN_DIR/logs/rank-<r>.log;
- its exit code goes to ATTEMPT_DIR/rank-<r>.exit (JSON), which the driver reads once srun is done:
  srun itself only reports the highest code, and "75 on every rank" must not be confused with
  "75 on one rank, a crash on another";
- when another rank's exit file shows a crash, the survivors are blocked in a collective: after
  PEER_GRACE_S this task stops its child, as the local launcher does.

Signals: SLURM delivers USR2 (preemption, time limit) and TERM to every process of the task. The
child starts with both ignored, so one that arrives before the runtime installed its flag handler
does not kill it; this wrapper keeps such a signal and forwards it once the child's handler is in
place (read from /proc/<pid>/status). A signal that reaches both is counted twice by the runtime's
flag, which is harmless (never resend one later: a Python process that is exiting has its handlers
reset to the default, and a stop signal then kills it and its exit code is lost). A ``unigen cancel``
(``cancel_requested`` in run.json, polled every 2 s) whose USR2 reached no task, because srun was
still starting them, is delivered the same way.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from unigen.orchestrator.atomic import atomic_write_text
from unigen.orchestrator.exitcodes import EXIT_USAGE, from_returncode
from unigen.orchestrator.launchers.attempt_policy import PEER_GRACE_S, is_failure

POLL_S = 0.2
CANCEL_POLL_S = 2.0
FORWARDED = (signal.SIGUSR2, signal.SIGTERM)


def rank_env(environ: dict[str, str]) -> dict[str, str]:
    """The runtime's environment for this task."""
    env = dict(environ, RANK=environ["SLURM_PROCID"], WORLD_SIZE=environ["SLURM_NTASKS"],
               LOCAL_RANK=environ.get("SLURM_LOCALID", "0"), PYTHONUNBUFFERED="1")
    env.setdefault("UNIGEN_JOB_ID", environ.get("SLURM_JOB_ID", ""))
    env.setdefault("OMP_NUM_THREADS", environ.get("SLURM_CPUS_PER_TASK", "1"))
    return env


def handler_installed(pid: int, sig: int) -> bool:
    """True when process ``pid`` catches ``sig`` (SigCgt of /proc/<pid>/status); True when unreadable,
    so a signal is never held back forever."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except (OSError, ValueError, IndexError):
        pass
    return True


def write_exit(path: Path, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload) + "\n")  # the driver and the peers never see half a file


def read_exit(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _ignore_stop_signals() -> None:  # runs in the child between fork and exec
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_IGN)


class Task:
    def __init__(self, run_dir: Path, attempt_dir: Path, environ: dict[str, str], command: list[str] | None = None):
        self.run_dir, self.attempt_dir = run_dir, attempt_dir
        self.command = command or [sys.executable, "-m", "unigen.orchestrator.runtime", str(run_dir)]
        self.env = rank_env(environ)
        self.rank = int(self.env["RANK"])
        self.pending: list[int] = []
        self.signalled = False  # a stop signal reached this task (and so, normally, the runtime too)
        self.child: subprocess.Popen | None = None
        self.stopped_for: int | None = None

    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002 - only remember it
        self.pending.append(signum)
        self.signalled = True

    def run(self) -> int:
        for sig in FORWARDED:
            signal.signal(sig, self._on_signal)
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"rank-{self.rank}.log", "ab") as out:
            out.write((f"\n===== attempt {self.env.get('UNIGEN_ATTEMPT', '?')} rank {self.rank} "
                       f"(SLURM job {self.env.get('SLURM_JOB_ID')}, node {self._node()}) =====\n").encode())
            out.flush()
            self.child = subprocess.Popen(
                self.command, env=self.env,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_ignore_stop_signals)
        code = self._watch()
        write_exit(self.attempt_dir / f"rank-{self.rank}.exit", {
            "rank": self.rank, "code": code, "node": self._node(), "step_id": self.env.get("SLURM_STEP_ID"),
            "stopped_after_peer": self.stopped_for})
        return code

    def _watch(self) -> int:
        assert self.child is not None
        peer_failed_at: float | None = None
        next_cancel_check = 0.0
        while True:
            rc = self.child.poll()
            if rc is not None:
                return from_returncode(rc)
            if not self.signalled and time.monotonic() >= next_cancel_check:
                next_cancel_check = time.monotonic() + CANCEL_POLL_S
                if self._cancel_requested():  # `unigen cancel` whose USR2 found no task yet
                    self.pending.append(signal.SIGUSR2)
                    self.signalled = True
            self._forward()
            if peer_failed_at is None:
                failed = self._failed_peer()
                if failed is not None:
                    peer_failed_at, self.stopped_for = time.monotonic(), failed
            elif time.monotonic() - peer_failed_at > PEER_GRACE_S:
                self.child.kill()
            time.sleep(POLL_S)

    def _forward(self) -> None:
        while self.pending and self.child is not None:
            sig = self.pending[0]
            if not handler_installed(self.child.pid, sig):
                return  # still starting: keep it until the runtime's handler is there
            self.pending.pop(0)
            try:
                os.kill(self.child.pid, sig)
            except ProcessLookupError:
                return

    def _cancel_requested(self) -> bool:
        try:
            return bool(json.loads((self.run_dir / "run.json").read_text()).get("cancel_requested"))
        except (OSError, ValueError):  # being replaced this instant: look again next time
            return False

    def _failed_peer(self) -> int | None:
        for path in self.attempt_dir.glob("rank-*.exit"):
            data = read_exit(path)
            if data and data.get("rank") != self.rank and is_failure(data.get("code")):
                return int(data["rank"])
        return None

    def _node(self) -> str:
        return self.env.get("SLURMD_NODENAME") or socket.gethostname()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m unigen.orchestrator.launchers.slurm.task RUN_DIR ATTEMPT_DIR (run by srun)",
              file=sys.stderr)
        return EXIT_USAGE
    attempt_dir = Path(argv[1])
    attempt_dir.mkdir(parents=True, exist_ok=True)
    return Task(Path(argv[0]), attempt_dir, dict(os.environ)).run()


if __name__ == "__main__":
    sys.exit(main())
