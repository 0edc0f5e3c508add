"""The job side's decisions: what an attempt's rank exit codes mean, the two budgets, why the ranks
were told to stop (from scontrol's view of the job), and MASTER_PORT."""
from __future__ import annotations

import datetime as dt
import socket

import pytest

from unigen.orchestrator.config.profile import SlurmSection
from unigen.orchestrator.launchers.slurm.job import PORT_BASE, PORT_SPAN, master_port, pick_port
from unigen.orchestrator.launchers.slurm.policy import budget_exhausted, decide, requeue_cause, used_budgets

SLURM = SlurmSection(max_requeues=2, max_failures=1)


def ended(*reasons: str) -> list[dict]:
    return [{"attempt": i + 1, "exit_reason": r} for i, r in enumerate(reasons)]


def test_all_ranks_done_is_completed():
    d = decide([0, 0], cause="requeue", attempts=[], slurm=SLURM)
    assert (d.exit_reason, d.status, d.requeue, d.exit_code) == ("completed", "completed", False, 0)


@pytest.mark.parametrize("codes", [[75, 75], [75, 0]])
def test_saved_on_a_signal_is_requeued_under_its_cause(codes):
    d = decide(codes, cause="preempted", attempts=ended("timeout"), slurm=SLURM)
    assert (d.exit_reason, d.status, d.requeue, d.exit_code) == ("preempted", "requeued", True, 75)


def test_requeue_budget_counts_preemptions_and_time_limits_together():
    d = decide([75, 75], cause="timeout", attempts=ended("preempted", "crashed", "timeout"), slurm=SLURM)
    assert (d.status, d.requeue) == ("failed", False)
    assert "requeued 3 times after preemption or time limit, more than slurm.max_requeues=2" in d.error


def test_a_crash_is_requeued_while_the_failure_budget_lasts():
    d = decide([1, 137], cause="requeue", attempts=ended("preempted", "preempted"), slurm=SLURM)
    assert (d.exit_reason, d.status, d.requeue, d.exit_code) == ("crashed", "requeued", True, 1)
    d = decide([1, 0], cause="requeue", attempts=ended("crashed"), slurm=SLURM, error="RuntimeError: boom")
    assert (d.status, d.requeue) == ("failed", False)
    assert "crashed 2 times, more than slurm.max_failures=1" in d.error and "RuntimeError: boom" in d.error


def test_a_rank_without_exit_code_is_a_crash_even_if_the_others_saved():
    d = decide([75, None], cause="preempted", attempts=[], slurm=SLURM)
    assert (d.exit_reason, d.requeue) == ("crashed", True)


@pytest.mark.parametrize("codes", [[2, 1], [1, 2], [2, 137]])
def test_a_user_error_is_never_requeued(codes):
    d = decide(codes, cause="requeue", attempts=[], slurm=SlurmSection(max_failures=99),
               error="init_from run:x has no committed checkpoint")
    assert (d.status, d.requeue, d.exit_code) == ("failed", False, 2)
    assert d.error == "init_from run:x has no committed checkpoint"


def test_cancel_wins_over_a_requeue_request():
    d = decide([75, 75], cause="preempted", attempts=[], slurm=SLURM, cancel_requested=True)
    assert (d.exit_reason, d.status, d.requeue) == ("cancelled", "cancelled", False)


def test_budgets_are_checked_before_an_attempt_starts():
    assert used_budgets(ended("preempted", "timeout", "requeue", "crashed", "lost", "completed")) == (3, 2)
    assert budget_exhausted(ended("preempted", "preempted"), SLURM) is None
    assert "slurm.max_requeues=2" in budget_exhausted(ended("preempted", "timeout", "preempted"), SLURM)
    assert "slurm.max_failures=1" in budget_exhausted(ended("lost", "crashed"), SLURM)


def _stamp(offset_s: float) -> str:
    return (dt.datetime.now() + dt.timedelta(seconds=offset_s)).strftime("%Y-%m-%dT%H:%M:%S")


def test_requeue_cause_from_scontrol():
    now = dt.datetime.now().timestamp()
    assert requeue_cause({"PreemptTime": _stamp(-3), "EndTime": _stamp(7)}, grace_s=300, now_ts=now) == "preempted"
    assert requeue_cause({"PreemptTime": "None", "EndTime": _stamp(40)}, grace_s=55, now_ts=now) == "timeout"
    assert requeue_cause({"PreemptTime": "None", "EndTime": _stamp(3 * 3600)}, grace_s=55, now_ts=now) == "requeue"
    assert requeue_cause({"PreemptTime": "None", "EndTime": "Unknown"}, grace_s=55, now_ts=now) == "requeue"
    assert requeue_cause(None, grace_s=55, now_ts=now) == "requeue"


def test_master_port_range_and_spread():
    ports = {master_port(j, 0) for j in range(1, 10_001)}
    assert len(ports) == 10_000 and min(ports) >= PORT_BASE and max(ports) < PORT_BASE + PORT_SPAN
    assert master_port(77, 0) != master_port(77, 1) == master_port(77, 3)
    assert master_port(77, 0) == master_port(10_077, 0)  # ids 10000 apart may share (documented)


def _occupy_a_derived_port() -> tuple[int, socket.socket]:
    for job in range(4321, 4400):  # a job whose derived port is free right now, so we can take it
        sock = socket.socket()
        try:
            sock.bind(("", master_port(job, 0)))
        except OSError:
            sock.close()
            continue
        sock.listen()
        return job, sock
    raise AssertionError("no free port among 79 candidates")


def test_pick_port_steps_over_a_busy_port():
    job, busy = _occupy_a_derived_port()
    wanted = master_port(job, 0)
    with busy:
        got = pick_port(job, 0, on_master=True)
        assert got != wanted and (got - wanted) % 2 == 0  # same parity: restarts still alternate
        assert pick_port(job, 0, on_master=False) == wanted  # only the master node can check
