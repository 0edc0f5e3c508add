"""``unigen ui [--port P] [--run-root DIR]``: the MLflow UI for the configured store.

- ``MLFLOW_TRACKING_URI`` names a tracking server (http/https): that server already serves the UI;
  its runs page URL is printed and nothing is started.
- Otherwise (the default ``sqlite:///<run_root>/mlflow.db``, or a database URI): an ``mlflow server``
  is started on 127.0.0.1 only (port P, default 5000 or a free one when 5000 is taken) with
  ``--workers 1``, its runs page URL printed once it answers, and it runs until Ctrl-C (or SIGINT / SIGTERM,
  also when started in the background), which stops it by pid.
  Its output goes to ``<run_root>/mlflow-ui.log``.

The URL printed is the runs page of the newest run's experiment (``<server>/#/experiments/<id>/runs``,
opened on training runs: ``tracking.ui_view.runs_page_url``); the server root when no run has reached
that store yet.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from unigen.orchestrator.commands.runs import run_root_arg
from unigen.orchestrator.errors import UserError

DEFAULT_PORT = 5000
START_TIMEOUT_S = 90.0
HOST = "127.0.0.1"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def pick_port(requested: int | None) -> int:
    """``requested`` (which must be free), else 5000 when free, else one the kernel picks."""
    if requested is not None:
        if not 0 < requested < 65536:
            raise UserError(f"--port {requested} is not a TCP port: use 1-65535")
        if not _port_free(requested):
            raise UserError(f"--port {requested} is in use on {HOST}: pick another or leave --port out")
        return requested
    if _port_free(DEFAULT_PORT):
        return DEFAULT_PORT
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class UiServer:
    """An ``mlflow server`` we started on loopback, stopped by its pid."""

    proc: subprocess.Popen
    url: str
    log_path: Path

    @classmethod
    def start(cls, store_uri: str, *, port: int, artifact_root: Path, log_path: Path) -> "UiServer":
        argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store_uri,
                "--default-artifact-root", str(artifact_root), "--host", HOST, "--port", str(port),
                "--workers", "1"]
        # The UI needs no background job runner (one more ~250 MB process).
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        server = cls(proc=proc, url=f"http://{HOST}:{port}", log_path=log_path)
        server.wait_ready(START_TIMEOUT_S)
        return server

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise UserError(f"the MLflow UI server exited with code {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise UserError(f"the MLflow UI server did not answer within {timeout_s:.0f} s; see {self.log_path}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the server (it stops its uvicorn worker), SIGKILL its process group if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only what we started
                self.proc.wait(5)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _remote_stores(root: Path) -> list[str]:
    from unigen.orchestrator.runs import list_runs
    from unigen.orchestrator.tracking.store import is_remote

    uris = {(r.get("mlflow") or {}).get("tracking_uri") or "" for r in list_runs(root)}
    return sorted(u for u in uris if u and is_remote(u))


def newest_experiment(root: Path, *, remote: str | None) -> str | None:
    """The MLflow experiment id of the newest run under ``root`` that tracks to ``remote`` (a server URL),
    or, with ``remote`` None, to a local store; None when no such run reached MLflow yet."""
    from unigen.orchestrator.runs import list_runs
    from unigen.orchestrator.tracking.store import display_uri, is_remote

    for record in reversed(list_runs(root)):
        mlflow_rec = record.get("mlflow") or {}
        uri = mlflow_rec.get("tracking_uri") or ""
        same = (is_remote(uri) and display_uri(uri).rstrip("/") == remote.rstrip("/")) if remote else not is_remote(uri)
        if same and mlflow_rec.get("experiment_id"):
            return str(mlflow_rec["experiment_id"])
    return None


def run(args: argparse.Namespace) -> int:
    from unigen.orchestrator.tracking.store import default_artifact_root, display_uri, is_remote, resolve_tracking_uri
    from unigen.orchestrator.tracking.ui_view import runs_page_url

    root = run_root_arg(args)
    uri = resolve_tracking_uri(None, run_root=root)
    if is_remote(uri):
        server_url = display_uri(uri)
        page = runs_page_url(server_url, newest_experiment(root, remote=server_url))
        print(f"MLflow UI: {page} (the tracking server named by MLFLOW_TRACKING_URI serves it)")
        return 0
    root.mkdir(parents=True, exist_ok=True)
    from unigen.orchestrator.tracking.relocate import rebase_artifacts

    rebase_artifacts(uri)  # a copied runs root: the UI shows its own artifacts, not the original's
    port = pick_port(getattr(args, "port", None))
    server = UiServer.start(uri, port=port, artifact_root=default_artifact_root(root),
                            log_path=root / "mlflow-ui.log")
    # `kill` must not orphan the server, nor SIGINT: a shell that starts a command in the background (`&`,
    # nohup, CI runners) starts it with SIGINT ignored, and Python then never raises KeyboardInterrupt.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:  # from here on, Ctrl-C at any moment stops the server we started
        page = runs_page_url(server.url, newest_experiment(root, remote=None))
        print(f"MLflow UI: {page}  (store {display_uri(uri)}; Ctrl-C stops it)", flush=True)
        elsewhere = _remote_stores(root)
        if elsewhere:
            print(f"note: some runs here track to {', '.join(elsewhere)}: their UI is there", flush=True)
        code = server.proc.wait()
    except KeyboardInterrupt:
        server.stop()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"the MLflow UI server exited with code {code}; see {server.log_path}", file=sys.stderr)
    return 1
