"""One rank's process, owned by one Ray worker (the body of the actor ``ray.group`` places).

A plain class, so it is also usable (and unit-tested) without Ray: ``start`` spawns
``python -m unigen.orchestrator.runtime RUN_DIR`` with the rank's environment, its output appended
to ``RUN_DIR/logs/rank-<r>.log``; ``poll``, ``signal`` and ``kill`` are quick calls the driver makes
while the rank trains. Every call returns at once, so the actor needs no threads.

The rank leads its own process group (its data-loader workers belong to it, ``kill`` takes them
all) and gets SIGKILL from the kernel when the actor process dies (PR_SET_PDEATHSIG): a worker
killed by Ray or lost with its raylet never leaves a rank training on, holding the GPU.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from unigen.orchestrator.launchers.attempts import parent_death_signal


class RankProcess:
    """Starts and watches one rank process on the node this object lives on."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None

    # -- where am I ------------------------------------------------------------------------------
    def node_info(self) -> dict[str, Any]:
        """Node id, IP, hostname and the GPU ids Ray assigned to this worker (empty without Ray)."""
        info = {"node_id": socket.gethostname(), "node_ip": "127.0.0.1", "hostname": socket.gethostname(),
                "gpu_ids": []}
        ray = sys.modules.get("ray")  # an actor has it imported; elsewhere (tests) do not start Ray
        if ray is not None and ray.is_initialized():
            ctx = ray.get_runtime_context()
            info.update(node_id=ctx.get_node_id(), node_ip=ray.util.get_node_ip_address(),
                        gpu_ids=[str(g) for g in ray.get_gpu_ids()])
        return info

    def free_port(self, host: str = "") -> int:
        """A TCP port free on this node right now, for the rendezvous of rank 0."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            return s.getsockname()[1]

    def check_paths(self, paths: list[str]) -> list[str]:
        """The given paths that this node cannot see (the run folder must be on shared storage)."""
        return [p for p in paths if not Path(p).exists()]

    # -- the rank --------------------------------------------------------------------------------
    def start(self, *, run_dir: str, rank: int, env: dict[str, str], cwd: str | None, header: str,
              python: str | None = None) -> dict[str, Any]:
        """Spawn the rank; returns its pid, host and the working directory it got."""
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError(f"rank {rank} is already running (pid {self._proc.pid})")
        log_path = Path(run_dir) / "logs" / f"rank-{rank}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        workdir = cwd if cwd and Path(cwd).is_dir() else None
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        with open(log_path, "ab") as out:
            note = "" if workdir or not cwd else f" (submit folder {cwd} not on this node: relative data paths fail)"
            out.write(f"\n===== {header} host {socket.gethostname()}{note} =====\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                [python or sys.executable, "-m", "unigen.orchestrator.runtime", run_dir],
                env=full_env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=parent_death_signal(signal.SIGKILL))
        return {"pid": self._proc.pid, "host": socket.gethostname(), "cwd": workdir or os.getcwd()}

    def poll(self) -> int | None:
        """The rank's exit code (negative: killed by that signal), or None while it runs."""
        if self._proc is None:
            raise RuntimeError("poll() before start()")
        return self._proc.poll()

    def signal(self, signum: int) -> bool:
        """Send ``signum`` to the rank process only (False when it had already ended). Not to its
        group: a data-loader worker dies of SIGTERM, and the rank would crash instead of saving."""
        if self._proc is None or self._proc.poll() is not None:
            return False
        try:
            self._proc.send_signal(signum)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> int | None:
        """SIGKILL the rank and everything it started; waits briefly and returns its exit code."""
        if self._proc is None:
            return None
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            return self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return None
