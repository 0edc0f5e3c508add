"""A real MLflow tracking server for tests: ``mlflow server`` with a sqlite backend on loopback.

Free port chosen at construction, sqlite database and artifact folder under ``root``, ``--workers 1``,
ready when ``/health`` answers, stopped by pid (its uvicorn worker too). It can be stopped and started
again on the same port and database (the MLflow-down tests), or frozen with SIGSTOP (a stalled server:
connections hang instead of failing).

    with MlflowServer(tmp_path / "mlflow") as server:
        client = MlflowClient(server.uri)
        server.stop(); ...; server.start()     # an outage
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import time
import urllib.request
from pathlib import Path

from tests.services.ports import LOOPBACK, free_port
from tests.services.procs import Daemon, ServiceError, pid_alive, start_daemon, stop_pids, wait_until

START_TIMEOUT_S = 120.0


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (read from /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            found.extend(children)
            todo.extend(children)
    return found


def listening(port: int) -> bool:
    """True while something accepts TCP connections on loopback:`port`."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((LOOPBACK, port)) == 0


class MlflowServer:
    """One ``mlflow server`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], *, port: int | None = None):
        self.root = Path(root)
        self.db_path = self.root / "mlflow.db"
        self.artifacts = self.root / "artifacts"
        self.log_path = self.root / "mlflow-server.log"
        self.port = port or free_port()
        self.daemon: Daemon | None = None
        self._pids: set[int] = set()

    @property
    def uri(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pids(self) -> list[int]:
        """The server and its workers, as last seen alive."""
        if self.daemon is not None and self.daemon.alive():
            self._pids |= {self.daemon.pid, *_descendants(self.daemon.pid)}
        return sorted(p for p in self._pids if pid_alive(p))

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def start(self, timeout: float = START_TIMEOUT_S) -> "MlflowServer":
        """Start (or start again on the same port and database) and wait for /health."""
        if self.daemon is not None and self.daemon.alive():
            return self
        self.root.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + 30
        # Something still LISTENING (the previous process letting go). TIME_WAIT connections left by
        # the clients do not count: uvicorn binds with SO_REUSEADDR.
        while listening(self.port):
            if time.monotonic() > deadline:
                raise ServiceError(f"port {self.port} still busy; cannot restart the MLflow server")
            time.sleep(0.2)
        argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.db_path}",
                "--artifacts-destination", str(self.artifacts), "--host", LOOPBACK, "--port", str(self.port),
                "--workers", "1"]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
               "UNIGEN_TEST_SERVICE": f"mlflow:{self.root}"}  # a marker for leftover hunts
        self.daemon = start_daemon("mlflow server", argv, self.log_path, env=env, cwd=self.root)
        try:
            self.daemon.wait_ready(self.healthy, timeout, "answering /health")
        except ServiceError:
            self.stop()
            raise
        self._pids = set()
        _ = self.pids
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server and its workers by pid; safe to call twice. Raises if one survives."""
        if self.daemon is None:
            return
        workers = [p for p in self.pids if p != self.daemon.pid]
        self.resume()  # a frozen process ignores SIGTERM until it runs again
        self.daemon.stop(timeout)
        stop_pids([p for p in workers if pid_alive(p)], timeout=5)
        alive = [p for p in workers if pid_alive(p)]
        if alive:
            raise ServiceError(f"MLflow server processes {alive} survived SIGKILL")

    def kill(self, timeout: float = 15.0) -> None:
        """Crash the server: SIGKILL every process by pid, frozen or not. Unlike ``stop`` it never lets
        a frozen server run again first (a graceful stop would answer the requests queued meanwhile,
        and the clients would see the server come back for a moment)."""
        if self.daemon is None:
            return
        pids = list(self.pids)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.daemon.stop(timeout)  # reaps the daemon
        if not wait_until(lambda: not any(pid_alive(p) for p in pids), timeout):
            raise ServiceError(f"MLflow server processes {[p for p in pids if pid_alive(p)]} survived SIGKILL")

    def pause(self) -> None:
        """Freeze every server process (SIGSTOP): requests hang until their client timeout."""
        for pid in self.pids:
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def logs(self, lines: int = 60) -> str:
        return self.daemon.logs(lines) if self.daemon else "(never started)"

    def __enter__(self) -> "MlflowServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
