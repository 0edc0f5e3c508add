"""Fixtures that start real clusters on loopback: SLURM (one or two nodes) and a Ray head.

Each fixture stops what it started by pid (jobs by id) even when the test fails, and prints the
daemons' log tails into a failed test's report. A SLURM cluster starts in about half a second, so its
fixtures are per test (isolation); a Ray head takes ~5 s and ~1.5 GB, so `ray_head` is per module.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.services.ray_head import RayHead
from tests.services.slurm import SlurmCluster

CLUSTER_JOBS = Path(__file__).parent / "cluster_jobs"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Lets fixtures see whether the test body failed (item.rep_call.failed) during teardown.
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _print_logs_if_failed(request, logs) -> None:
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"\n===== service logs for {request.node.nodeid} =====\n{logs()}")


@pytest.fixture
def cluster_jobs() -> Path:
    """The folder of job scripts the cluster tests submit."""
    return CLUSTER_JOBS


@pytest.fixture
def slurm_cluster(request):
    """A one-node SLURM cluster (node `localhost`, 2 CPUs, partitions `low` and `high`)."""
    with SlurmCluster(nodes=1) as cluster:
        yield cluster
        _print_logs_if_failed(request, cluster.logs)


@pytest.fixture
def slurm_cluster_2n(request):
    """A two-node SLURM cluster on this host (nodes `n1`, `n2`, 2 CPUs each)."""
    with SlurmCluster(nodes=2) as cluster:
        yield cluster
        _print_logs_if_failed(request, cluster.logs)


@pytest.fixture
def slurm_env(slurm_cluster, monkeypatch) -> SlurmCluster:
    """`slurm_cluster` with SLURM_CONF set in os.environ, for code that calls sbatch itself
    (submitit). Returns the cluster."""
    for key, value in slurm_cluster.env.items():
        monkeypatch.setenv(key, value)
    return slurm_cluster


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head on 127.0.0.1 (2 CPUs) shared by the tests of one module; stopped by pid, and
    teardown fails if any of its processes survives."""
    with RayHead(num_cpus=2) as head:
        yield head
