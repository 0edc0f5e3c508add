"""The SLURM test clusters do real work: multi-task steps, submitit, preemption with requeue, a
time-limit signal, two nodes with torch.distributed, and job dependencies.

Timings on 2 cores are in runbooks/test-clusters.md. A requeued job waits `cred_expire` (10 s) before
it may start again; the time-limit signal comes from slurmctld's 30-second time-limit sweep.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import submitit

from tests.services.ports import free_port
from tests.services.procs import find_pids, pid_alive, wait_until
from tests.services.slurm import SlurmCluster

pytestmark = pytest.mark.services


def read_events(path) -> list[tuple[str, float, str]]:
    """Lines "<event> <epoch> <details>" written by the job scripts -> (event, time, details)."""
    events = []
    for line in path.read_text().splitlines():
        name, stamp, *rest = line.split(" ", 2)
        events.append((name, float(stamp), rest[0] if rest else ""))
    return events


def first(events, name: str, details: str = "") -> float:
    """Time of the first event `name` whose details contain `details`."""
    for event, stamp, more in events:
        if event == name and details in more:
            return stamp
    raise AssertionError(f"no event {name!r} {details!r} in {events}")


def test_cluster_is_idle_and_scheduler_answers(slurm_cluster):
    assert slurm_cluster.nodes_idle()
    partitions = slurm_cluster.run("sinfo", "-h", "-o", "%P %a").stdout.split("\n")
    assert {"low* up", "high up"} <= set(partitions)
    conf = slurm_cluster.run("scontrol", "show", "config").stdout
    assert f"SlurmctldPort           = {slurm_cluster.layout.controller_port}" in conf
    assert "preempt/partition_prio" in conf


def test_sbatch_two_tasks_run_srun(slurm_cluster, cluster_jobs, tmp_path):
    job = slurm_cluster.sbatch(cluster_jobs / "ranks.sbatch", ["--ntasks=2", f"--output={tmp_path}/out.txt"],
                               [str(tmp_path)])
    info = slurm_cluster.wait_job(job, timeout=60)
    assert info["ExitCode"] == "0:0"
    lines = sorted((tmp_path / f"rank-{r}.txt").read_text().strip() for r in (0, 1))
    assert lines == [f"rank={r} ntasks=2 node=localhost job={job}" for r in (0, 1)]


def test_submitit_round_trip_two_tasks(slurm_env, tmp_path):
    def square_on_rank(x: int) -> tuple[int, int, str]:
        # Defined in the test: cloudpickle ships it by value, so the job needs no test module import.
        return int(os.environ["SLURM_PROCID"]), x * x, os.environ["SLURM_JOB_ID"]

    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(slurm_partition="low", nodes=1, tasks_per_node=2, cpus_per_task=1,
                               timeout_min=5, slurm_mem_per_cpu="200M")
    job = executor.submit(square_on_rank, 7)
    # submitit's own wait has no timeout and polls sacct (absent here): wait through scontrol first.
    slurm_env.wait_job(int(job.job_id), timeout=90)
    assert wait_until(job.done, 30), job.stderr()
    results = job.results()
    assert sorted(r[:2] for r in results) == [(0, 49), (1, 49)]
    assert {r[2] for r in results} == {str(job.job_id)}
    assert job.task(1).result() == (1, 49, str(job.job_id))


def submit_preemptible(cluster: SlurmCluster, jobs, events, mode: str, *options: str) -> int:
    return cluster.sbatch(jobs / "preemptible.sbatch",
                          ["--partition=low", "--ntasks=1", f"--output={events}.out", *options],
                          [str(jobs / "signal_worker.sh"), str(events), mode])


def wait_started(cluster: SlurmCluster, job: int, events) -> None:
    cluster.wait_job(job, {"RUNNING"}, timeout=30)
    assert wait_until(lambda: events.exists() and "start" in events.read_text(), 30), \
        f"job {job} never wrote its start line\n" + cluster.logs(20)


def test_high_partition_preempts_and_low_job_requeues(slurm_cluster, cluster_jobs, tmp_path):
    events = tmp_path / "low.events"
    low = submit_preemptible(slurm_cluster, cluster_jobs, events, "requeue", "--signal=USR2@60")
    wait_started(slurm_cluster, low, events)

    high_events = tmp_path / "high.events"
    high = slurm_cluster.sbatch(cluster_jobs / "stamp.sbatch",
                                ["--partition=high", "--ntasks=2", f"--output={tmp_path}/high.out"],
                                [str(high_events), "high", "2"])
    info = slurm_cluster.wait_job(low, timeout=90)
    assert slurm_cluster.wait_job(high, timeout=30)["ExitCode"] == "0:0"

    assert int(info["Restarts"]) >= 1
    low_events = read_events(events)
    names = [e[0] for e in low_events]
    assert names == ["start", "signal", "requeued", "start", "done"], low_events
    # preempt_send_user_signal: the job's own --signal (USR2), not SIGTERM, announces preemption.
    assert low_events[1][2] == "USR2"
    assert "restart=1" in low_events[3][2]
    high_log = read_events(high_events)
    high_start, high_end = first(high_log, "high", "start"), first(high_log, "high", "end")
    assert high_start >= first(low_events, "signal")
    assert first(low_events, "start", "restart=1") >= high_end  # the low job finished after high


def test_preempted_job_that_just_exits_is_not_requeued(slurm_cluster, cluster_jobs, tmp_path):
    # Pins a trap: a job that exits by itself inside GraceTime ends COMPLETED (its exit code), it is
    # NOT requeued. A trainer must call `scontrol requeue` itself (submitit does) before exiting.
    events = tmp_path / "low.events"
    low = submit_preemptible(slurm_cluster, cluster_jobs, events, "exit", "--signal=USR2@60")
    wait_started(slurm_cluster, low, events)
    high = slurm_cluster.sbatch(cluster_jobs / "stamp.sbatch",
                                ["--partition=high", "--ntasks=2", f"--output={tmp_path}/high.out"],
                                [str(tmp_path / "high.events"), "high", "0"])
    info = slurm_cluster.wait_job(low, timeout=30)
    slurm_cluster.wait_job(high, timeout=30)
    assert info["Restarts"] == "0"
    assert [e[0] for e in read_events(events)] == ["start", "signal", "exit"]


@pytest.mark.slow
def test_time_limit_signal_then_self_requeue_completes(slurm_cluster, cluster_jobs, tmp_path):
    events = tmp_path / "tl.events"
    job = submit_preemptible(slurm_cluster, cluster_jobs, events, "requeue", "--time=1",
                             "--signal=USR2@50")
    info = slurm_cluster.wait_job(job, timeout=120)
    assert int(info["Restarts"]) == 1
    ev = read_events(events)
    assert [e[0] for e in ev] == ["start", "signal", "requeued", "start", "done"], ev
    assert ev[1][2] == "USR2"
    # The signal came from the time limit (1 min), before it ran out: slurmctld checks every 30 s.
    assert 5 <= ev[1][1] - ev[0][1] < 60


def test_two_nodes_srun_and_torch_gloo(slurm_cluster_2n, cluster_jobs, tmp_path):
    out = tmp_path / "gloo"
    out.mkdir()
    job = slurm_cluster_2n.sbatch(
        cluster_jobs / "gloo.sbatch",
        ["--nodes=2", "--ntasks-per-node=1", f"--output={tmp_path}/gloo.out",
         f"--export=ALL,MASTER_PORT={free_port()}"],
        [sys.executable, str(cluster_jobs / "gloo_exchange.py"), str(out)])
    try:
        info = slurm_cluster_2n.wait_job(job, timeout=90)
    except Exception:
        print((tmp_path / "gloo.out").read_text())
        raise
    assert info["NodeList"] == "n[1-2]"
    ranks = [json.loads((out / f"gloo-rank{r}.json").read_text()) for r in (0, 1)]
    assert {r["node"] for r in ranks} == {"n1", "n2"}
    assert [r["sum"] for r in ranks] == [3.0, 3.0]  # (0 + 1) + (1 + 1)
    assert ranks[0]["nodes"] == ranks[1]["nodes"] == [ranks[0]["node"], ranks[1]["node"]]


def test_afterok_dependency_waits_and_never_runs_after_failure(slurm_cluster, cluster_jobs, tmp_path):
    events = tmp_path / "dep.events"
    stamp = cluster_jobs / "stamp.sbatch"
    a = slurm_cluster.sbatch(stamp, [f"--output={tmp_path}/a.out"], [str(events), "A", "3"])
    b = slurm_cluster.sbatch(stamp, [f"--dependency=afterok:{a}", f"--output={tmp_path}/b.out"],
                             [str(events), "B", "0"])
    bad = slurm_cluster.sbatch(stamp, [f"--output={tmp_path}/bad.out"], [str(events), "BAD", "0", "1"])
    never = slurm_cluster.sbatch(stamp, [f"--dependency=afterok:{bad}", f"--output={tmp_path}/n.out"],
                                 [str(events), "NEVER", "0"])
    waiting = slurm_cluster.job(b)
    assert (waiting["JobState"], waiting["Reason"]) == ("PENDING", "Dependency")

    slurm_cluster.wait_job(b, timeout=60)
    ev = read_events(events)
    assert first(ev, "B", "start") >= first(ev, "A", "end")
    slurm_cluster.wait_job(bad, {"FAILED"}, timeout=30)
    assert wait_until(lambda: slurm_cluster.job(never)["Reason"] == "DependencyNeverSatisfied", 30)
    assert slurm_cluster.job(never)["JobState"] == "PENDING"
    assert not any(e[0] == "NEVER" for e in read_events(events))


def test_stop_kills_daemons_and_running_jobs_by_pid(cluster_jobs, tmp_path):
    cluster = SlurmCluster(nodes=1).start()
    root = cluster.root
    events = tmp_path / "orphan.events"
    job = submit_preemptible(cluster, cluster_jobs, events, "requeue")
    wait_started(cluster, job, events)
    daemons = [cluster.slurmctld.pid, *(d.pid for d in cluster.slurmds)]
    if cluster.munge.daemon is not None:
        daemons.append(cluster.munge.daemon.pid)
    worker_pids = find_pids(env_marker={"SLURM_JOB_ID": str(job)})
    assert worker_pids, "the job's processes should be visible before stop"

    cluster.stop()
    assert not [p for p in daemons + worker_pids if pid_alive(p)]
    assert not root.exists()
    assert "slurmctld" in cluster.last_logs  # the logs stay readable for failure messages


def test_bad_cluster_arguments_are_rejected():
    with pytest.raises(ValueError, match="nodes must be 1 or 2"):
        SlurmCluster(nodes=3)
    with pytest.raises(ValueError, match="munge mode must be auto, own or system"):
        SlurmCluster(munge="nope")


def test_two_clusters_run_side_by_side(slurm_cluster, cluster_jobs, tmp_path):
    # Free ports and private folders: a second cluster on the same host does not disturb the first.
    with SlurmCluster(nodes=1) as other:
        assert other.layout.controller_port != slurm_cluster.layout.controller_port
        jobs = [c.sbatch(cluster_jobs / "stamp.sbatch", [f"--output={tmp_path}/{i}.out"],
                         [str(tmp_path / f"{i}.events"), f"c{i}", "0"])
                for i, c in enumerate((slurm_cluster, other))]
        for c, job in zip((slurm_cluster, other), jobs, strict=True):
            c.wait_job(job, timeout=30)
    assert slurm_cluster.nodes_idle()


def test_dev_cluster_command_prints_env_and_stops_on_sigterm():
    # The runbook's `python -m tests.services.slurm` (scripts/dev-slurm.sh) works as documented.
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "tests.services.slurm", "--nodes", "2"], cwd=repo,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        export = proc.stdout.readline().strip()
        assert export.startswith("export SLURM_CONF=/tmp/usl-"), export
        conf = Path(export.split("=", 1)[1])
        sinfo = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True,
                               env={**os.environ, "SLURM_CONF": str(conf)}, timeout=30)
        assert sorted(sinfo.stdout.split("\n")[:-1]) == ["n1 idle", "n1 idle", "n2 idle", "n2 idle"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert not conf.parent.exists()
