"""The Ray test head does real work: Ray Jobs with actors, Ray Train over gloo recovering a worker
killed from outside, loopback-only listeners, and a stop that leaves no process of the head behind."""
from __future__ import annotations

import json
import os
import signal
import uuid

import pytest

from tests.services.ports import listening_sockets
from tests.services.procs import pid_alive, wait_until
from tests.services.ray_head import RayHead

pytestmark = pytest.mark.services
LOOPBACK_ADDRESSES = {"127.0.0.1", "::ffff:127.0.0.1"}


def job_result(logs: str) -> dict:
    """The JSON after the last `RESULT ` line a job script printed."""
    lines = [line for line in logs.splitlines() if line.startswith("RESULT ")]
    assert lines, f"the job printed no RESULT line; logs:\n{logs[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def submit(head: RayHead, client, entrypoint: str, jobs_dir) -> str:
    return client.submit_job(entrypoint=entrypoint,
                             runtime_env={"working_dir": str(jobs_dir),
                                          "env_vars": {"OMP_NUM_THREADS": "1"}})


def test_head_stop_leaves_no_process_behind(cluster_jobs):
    # Its own head (before the shared one starts): stop must find every process it started, the
    # renamed agents (ray::DashboardAgent, ...) and job workers included, and stop them by pid.
    head = RayHead().start()
    try:
        client = head.job_client()
        head.wait_job(submit(head, client, "python ray_actors.py", cluster_jobs), client=client)
        pids = head.pids()
        assert len(pids) >= 5, pids  # ray start, gcs_server, raylet, dashboard, agents, ...
        temp_dir = head.temp_dir
    finally:
        head.stop()
    assert [p for p in pids if pid_alive(p)] == []
    assert not temp_dir.exists()
    assert head.pids() == []


def test_head_listens_on_loopback_only(ray_head):
    sockets = listening_sockets(ray_head.pids())
    ports = {port for _, port, _ in sockets}
    assert {ray_head.port, ray_head.dashboard_port} <= ports
    assert {addr for addr, _, _ in sockets} <= LOOPBACK_ADDRESSES, sockets


def test_ray_job_runs_two_actors(ray_head, cluster_jobs):
    client = ray_head.job_client()
    job = submit(ray_head, client, "python ray_actors.py", cluster_jobs)
    assert ray_head.wait_job(job, client=client, timeout=120) == "SUCCEEDED"
    result = job_result(client.get_job_logs(job))
    assert result["values"] == [4, 9]
    assert len(set(result["pids"])) == 2  # two actor processes really ran


@pytest.mark.slow
def test_ray_train_recovers_a_worker_killed_mid_run(ray_head, cluster_jobs, tmp_path):
    client = ray_head.job_client()
    pid_file, events = tmp_path / "victim.pid", tmp_path / "events.jsonl"
    job = submit(ray_head, client,
                 f"python ray_train_job.py --storage {tmp_path / 'store'} --name t-{uuid.uuid4().hex[:8]} "
                 f"--events {events} --pid-file {pid_file}", cluster_jobs)
    assert wait_until(pid_file.exists, 150), \
        f"no worker reached the kill point; job logs:\n{client.get_job_logs(job)[-3000:]}"
    victim = int(pid_file.read_text())
    assert victim in ray_head.pids()  # a process of OUR head, killed by pid
    os.kill(victim, signal.SIGKILL)

    assert ray_head.wait_job(job, client=client, timeout=180) == "SUCCEEDED"
    result = job_result(client.get_job_logs(job))
    assert result["error"] is None
    assert result["metrics"]["step"] == 5 and result["metrics"]["sum"] == 3.0
    starts = [json.loads(line) for line in events.read_text().splitlines()]
    first, second = starts[:2], starts[2:]
    assert sorted(s["rank"] for s in first) == [0, 1] and all(s["start"] == 0 for s in first)
    # The restarted group resumed from a reported checkpoint, not from step 0, in new processes.
    assert sorted(s["rank"] for s in second) == [0, 1], starts
    resumed = {s["start"] for s in second}
    assert len(resumed) == 1 and 0 < resumed.pop() <= 3, starts
    assert victim not in {s["pid"] for s in second}
    assert result["metrics"]["start"] == second[0]["start"]
