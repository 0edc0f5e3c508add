"""A real local Ray head (`ray start --head --block`) on 127.0.0.1, for tests and debugging.

    with RayHead() as head:
        client = head.job_client()
        job = client.submit_job(entrypoint="python script.py", runtime_env={"working_dir": d})
        head.wait_job(job)

Every port is chosen free, the temp dir is short and private (Ray's unix sockets live there), and the
variables STACK.md names (loopback stays loopback, no auth token, no usage stats) are in every
process's environment. `ray stop` kills every Ray process on the machine, so this never calls it: the
head's processes are found by a marker in their environment or its temp dir in their command line,
and stopped by pid.

By hand: `python -m tests.services.ray_head` starts one and prints RAY_ADDRESS and the dashboard URL.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

from tests.services.ports import LOOPBACK, free_port_block, free_ports
from tests.services.procs import (
    Daemon,
    ServiceError,
    find_pids,
    log_tail,
    serve_until_stopped,
    start_daemon,
    stop_pids,
    wait_until,
)

MARKER = "UNIGEN_TEST_RAY"
# Without the first, Ray rewrites 127.0.0.1 to the eth0 address and binds 0.0.0.0; without the second
# a local ray.init leaves an auth token file behind that makes later drivers fail (STACK.md).
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0"}
WORKER_PORTS = 64
TERMINAL_JOB_STATES = {"SUCCEEDED", "FAILED", "STOPPED"}


def _ray_bin() -> str:
    # The venv's bin folder is not always on PATH (tests run as /venv/bin/python -m pytest).
    beside = Path(sys.executable).parent / "ray"
    found = str(beside) if beside.exists() else shutil.which("ray")
    if not found:
        raise ServiceError("ray not found: pip install 'ray[default,train]' (unigen's [ray] extra)")
    return found


class RayHead:
    """One Ray head node with `num_cpus` CPUs and a small object store, on loopback only."""

    def __init__(self, num_cpus: int = 2, object_store_mb: int = 256, start_timeout: float = 90.0,
                 keep: bool = False):
        self.num_cpus = num_cpus
        self.object_store_mb = object_store_mb
        self.start_timeout = start_timeout
        self.keep = keep
        self.temp_dir: Path | None = None
        self.port = self.dashboard_port = 0
        self.daemon: Daemon | None = None
        self.last_logs = ""

    # ----- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "RayHead":
        """Start the head; return once the dashboard's job API answers."""
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ur-", dir="/tmp"))
        try:
            self._start()
        except BaseException:
            self.stop(check=False)
            raise
        return self

    def _start(self) -> None:
        assert self.temp_dir is not None
        (self.port, self.dashboard_port, object_manager, node_manager, client_server, agent_listen,
         agent_grpc, runtime_env_agent, metrics) = free_ports(9)
        workers = free_port_block(WORKER_PORTS)
        argv = [_ray_bin(), "start", "--head", "--block", f"--node-ip-address={LOOPBACK}",
                f"--port={self.port}", f"--num-cpus={self.num_cpus}", "--num-gpus=0",
                f"--object-store-memory={self.object_store_mb * 1024 * 1024}",
                "--include-dashboard=true", f"--dashboard-host={LOOPBACK}",
                f"--dashboard-port={self.dashboard_port}",
                f"--object-manager-port={object_manager}", f"--node-manager-port={node_manager}",
                f"--ray-client-server-port={client_server}",
                f"--dashboard-agent-listen-port={agent_listen}",
                f"--dashboard-agent-grpc-port={agent_grpc}",
                f"--runtime-env-agent-port={runtime_env_agent}", f"--metrics-export-port={metrics}",
                f"--min-worker-port={workers}", f"--max-worker-port={workers + WORKER_PORTS - 1}",
                f"--temp-dir={self.temp_dir}", "--disable-usage-stats"]
        env = {**self.environ(), MARKER: str(self.temp_dir)}
        self.daemon = start_daemon("ray head", argv, self.temp_dir / "ray-start.out", env=env,
                                   cwd=self.temp_dir)
        self.daemon.wait_ready(self._jobs_api_answers, self.start_timeout, "answering the job API",
                               more_logs=self._session_logs())

    def stop(self, check: bool = True) -> None:
        """SIGTERM every process of this head at once, SIGKILL what is left after 5 s, and repeat
        while the sweep still finds some (a dying raylet may start workers). With `check`, raise
        ServiceError if one survives. Safe to call twice.

        Not `ray stop` (kills every Ray on the machine), and not only the `ray start --block`
        process: its own shutdown waits ~30 s after a Ray Train job, and a SIGKILLed raylet orphans
        its renamed agents, which only the sweep finds."""
        if self.temp_dir is None:
            return
        self.last_logs = self.logs()
        survivors: list[int] = []
        for _ in range(3):
            survivors = self.pids()
            if self.daemon is not None and self.daemon.alive():
                survivors.append(self.daemon.pid)
            if not survivors:
                break
            stop_pids(survivors, timeout=5)
        if self.daemon is not None:
            self.daemon.stop(timeout=5)  # reaps it
        survivors = self.pids()
        temp_dir, self.temp_dir, self.daemon = self.temp_dir, None, None
        if not self.keep:
            shutil.rmtree(temp_dir, ignore_errors=True)
        if check and survivors:
            raise ServiceError(f"Ray head processes survived SIGKILL: {survivors}")

    def __enter__(self) -> "RayHead":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def pids(self) -> list[int]:
        """Live processes of this head, matched by its temp dir in their command line (raylet,
        gcs_server, dashboard) or as their working directory (inherited from `ray start`, and job
        drivers and workers run in working_dir copies under it), or by the environment marker.
        The agents rename themselves (ray::DashboardAgent) and lose the first two."""
        if self.temp_dir is None:
            return []
        return sorted(find_pids(env_marker={MARKER: str(self.temp_dir)},
                                cmdline_contains=str(self.temp_dir), cwd_under=self.temp_dir))

    # ----- addresses and environment ---------------------------------------------------------------
    @property
    def address(self) -> str:
        """GCS address, for ray.init(address=...) / RAY_ADDRESS."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def dashboard_url(self) -> str:
        """For JobSubmissionClient(dashboard_url) and `ray job submit --address`."""
        return f"http://{LOOPBACK}:{self.dashboard_port}"

    @property
    def env(self) -> dict[str, str]:
        """Variables a process needs to use this head."""
        return {**RAY_ENV, "RAY_ADDRESS": self.address}

    def environ(self, **extra: str) -> dict[str, str]:
        """os.environ plus `env` and `extra`, with this interpreter's bin folder first on PATH: a
        Ray Job entrypoint's `python` resolves from the head's PATH."""
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        return {**os.environ, "PATH": path, **self.env, **extra}

    # ----- jobs ------------------------------------------------------------------------------------
    def _jobs_api_answers(self) -> bool:
        with urllib.request.urlopen(f"{self.dashboard_url}/api/jobs/", timeout=5) as r:
            json.loads(r.read())
            return r.status == 200

    def job_client(self):
        """A ray.job_submission.JobSubmissionClient for this head (imports ray on first use)."""
        for k, v in RAY_ENV.items():
            os.environ.setdefault(k, v)
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard_url)

    def wait_job(self, job_id: str, timeout: float = 120.0, client=None) -> str:
        """Wait until a Ray Job ends; return its status name. Raises ServiceError (with the job's
        logs) when it did not succeed or did not end in `timeout` s."""
        client = client or self.job_client()
        status = ""

        def ended() -> bool:
            nonlocal status
            status = str(client.get_job_status(job_id).value)
            return status in TERMINAL_JOB_STATES

        done = wait_until(ended, timeout, interval=0.5)
        if done and status == "SUCCEEDED":
            return status
        logs = client.get_job_logs(job_id)
        what = f"ended {status}" if done else f"still {status} after {timeout:.0f} s"
        raise ServiceError(f"Ray job {job_id} {what}; job logs:\n{logs[-4000:]}\n" + self.logs(20))

    # ----- diagnostics -----------------------------------------------------------------------------
    def _session_logs(self) -> list[Path]:
        if self.temp_dir is None:
            return []
        logs = self.temp_dir / "session_latest" / "logs"
        return [logs / n for n in ("gcs_server.out", "raylet.out", "dashboard.log")]

    def logs(self, lines: int = 30) -> str:
        """Tails of the head's main logs, for failure messages."""
        if self.temp_dir is None:
            return self.last_logs
        paths = [self.daemon.log_path] if self.daemon else []
        return "\n".join(log_tail(p, lines) for p in [*paths, *self._session_logs()])


def main(argv: list[str] | None = None) -> int:
    """Start a Ray head for debugging by hand, print how to reach it, stop on Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m tests.services.ray_head", description=main.__doc__)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs) after stopping")
    args = parser.parse_args(argv)
    with RayHead(num_cpus=args.num_cpus, keep=args.keep) as head:
        for k, v in head.env.items():
            print(f"export {k}={v}")
        print(f"# dashboard / job API: {head.dashboard_url}   temp dir: {head.temp_dir}")
        serve_until_stopped("# Ctrl-C (or SIGTERM to this pid) stops the head's processes by pid")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
