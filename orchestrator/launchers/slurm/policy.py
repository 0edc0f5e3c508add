"""What the job side does when an attempt's ranks have exited: complete, requeue, or give up.

Pure functions over exit codes and run.json's attempts, so every branch is unit-tested without a
cluster; what a code means and what follows is ``attempt_policy``'s rule, shared with the local and
Ray launchers. SLURM's two budgets (profile ``slurm``) are counted from run.json's attempts by
``exit_reason``: ``max_requeues`` over ``REQUEUE_REASONS`` (the ranks saved on a signal: preemption,
time limit, a USR2 sent by hand), ``max_failures`` over ``FAILURE_REASONS`` (a crash, a missing rank,
a killed driver).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from unigen.orchestrator.config.profile import SlurmSection
from unigen.orchestrator.launchers import attempt_policy as policy
from unigen.orchestrator.launchers.slurm.tools import parse_time, present

REQUEUE_REASONS = ("preempted", "timeout", "requeue")
FAILURE_REASONS = ("crashed", "lost")


@dataclass(frozen=True)
class Decision:
    exit_reason: str  # one of runs.EXIT_REASONS
    status: str  # the run's status after this attempt
    requeue: bool  # ask SLURM to run the job again (scontrol requeue)
    exit_code: int  # what run.json records for the attempt (the worst rank's)
    error: str | None = None


def used_budgets(attempts: Iterable[dict[str, Any]]) -> tuple[int, int]:
    """(requeues, failures) spent by the attempts that ended so far."""
    reasons = [a.get("exit_reason") for a in attempts]
    return sum(r in REQUEUE_REASONS for r in reasons), sum(r in FAILURE_REASONS for r in reasons)


def _over_message(over: str, requeues: int, failures: int, slurm: SlurmSection) -> str:
    if over == "requeues":
        return (f"requeued {requeues} times after preemption or time limit, more than slurm.max_requeues="
                f"{slurm.max_requeues}: raise it, or slurm.time so fewer attempts are needed")
    return (f"crashed {failures} times, more than slurm.max_failures={slurm.max_failures}: see the rank logs "
            "(unigen logs RUN --rank R)")


def budget_exhausted(attempts: list[dict[str, Any]], slurm: SlurmSection) -> str | None:
    """Why no further attempt may start (checked at the start of every attempt too, because SLURM
    may requeue a job by itself, e.g. when a preempted job did not finish its save in time)."""
    requeues, failures = used_budgets(attempts)
    over = policy.over_budget(failures, requeues, max_restarts=slurm.max_failures, max_requeues=slurm.max_requeues)
    return _over_message(over, requeues, failures, slurm) if over else None


def decide(codes: list[int | None], *, cause: str, attempts: list[dict[str, Any]], slurm: SlurmSection,
           cancel_requested: bool = False, error: str | None = None) -> Decision:
    """The outcome of one attempt (``attempt_policy.decide`` with SLURM's budgets). ``codes``: per rank,
    None when a rank left no exit code. ``cause``: what a requeue request is counted as (preempted |
    timeout | requeue), from the scheduler. ``attempts``: run.json's attempts before this one ended (this
    one excluded). ``error``: run.json's error text written by the runtime, if any."""
    outcome = policy.classify(codes)
    requeues, failures = used_budgets(attempts)
    d = policy.decide(outcome, restarts_used=failures, requeues_used=requeues, max_restarts=slurm.max_failures,
                      max_requeues=slurm.max_requeues, cancelled=cancel_requested)
    code = outcome.exit_code
    if d.action == "cancel":
        return Decision("cancelled", "cancelled", False, code, "cancelled by `unigen cancel`")
    if d.action == "done":
        return Decision("completed", "completed", False, 0)
    if outcome.reason == "requeue":
        assert cause in REQUEUE_REASONS, cause
        why = _over_message(d.over, d.requeues, d.restarts, slurm) if d.over else None
        return Decision(cause, d.status, d.again, code, why)
    if d.over == "fatal":
        return Decision("crashed", "failed", False, code, error or "a rank stopped on a user error (exit 2): see the rank logs")
    if d.over:
        why = _over_message(d.over, d.requeues, d.restarts, slurm)
        return Decision("crashed", "failed", False, code, f"{why}; last error: {error}" if error else why)
    return Decision("crashed", "requeued", True, code)


def requeue_cause(info: dict[str, str] | None, *, grace_s: int, now_ts: float) -> str:
    """Why the ranks were told to stop, from ``scontrol show job``: ``preempted`` when slurmctld set
    PreemptTime, ``timeout`` when the time limit is within the signal grace time (plus a minute of
    slack: slurmctld checks limits every 30 s), else ``requeue`` (a signal sent by hand)."""
    if info is None:
        return "requeue"
    if present(info.get("PreemptTime")):
        return "preempted"
    end = parse_time(info.get("EndTime"))
    if end is not None and end.timestamp() - now_ts <= grace_s + 60:
        return "timeout"
    return "requeue"
