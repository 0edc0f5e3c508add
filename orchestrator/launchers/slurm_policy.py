"""What the job side does when an attempt's ranks have exited: complete, requeue, or give up.

Pure functions over exit codes and run.json's attempts, so every branch is unit-tested without a
cluster. Two separate budgets (profile ``slurm``):
- ``max_requeues``: attempts that ended because the ranks saved on a signal (preemption, time
  limit, a USR2 sent by hand) and asked to be requeued (exit 75 on every rank that did not finish);
- ``max_failures``: attempts that crashed (any other exit, a missing rank, a killed driver); the next
  attempt resumes from the newest committed checkpoint.
A fatal user error (exit 2) and a cancel are never requeued.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from unigen.orchestrator.exitcodes import EXIT_FATAL, EXIT_REQUEUE

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
    requeues = failures = 0
    for a in attempts:
        reason = a.get("exit_reason")
        requeues += reason in REQUEUE_REASONS
        failures += reason in FAILURE_REASONS
    return requeues, failures


def worst_code(codes: list[int | None]) -> int:
    """The attempt's exit code: the first crash code, else 75 when any rank asked for a requeue, else 0;
    a rank that left no exit code counts as a crash (1)."""
    bad = [1 if c is None else c for c in codes if c not in (0, EXIT_REQUEUE)]
    if bad:
        return bad[0]
    return EXIT_REQUEUE if EXIT_REQUEUE in codes else 0


def budget_exhausted(attempts: list[dict[str, Any]], slurm: dict[str, Any]) -> str | None:
    """Why no further attempt may start (checked at the start of every attempt too, because SLURM
    may requeue a job by itself, e.g. when a preempted job did not finish its save in time)."""
    requeues, failures = used_budgets(attempts)
    max_requeues, max_failures = int(slurm.get("max_requeues", 10)), int(slurm.get("max_failures", 2))
    if requeues > max_requeues:
        return (f"requeued {requeues} times after preemption or time limit, more than slurm.max_requeues="
                f"{max_requeues}: raise it, or slurm.time so fewer attempts are needed")
    if failures > max_failures:
        return (f"crashed {failures} times, more than slurm.max_failures={max_failures}: see the rank logs "
                "(unigen logs RUN --rank R)")
    return None


def decide(codes: list[int | None], *, cause: str, attempts: list[dict[str, Any]], slurm: dict[str, Any],
           cancel_requested: bool = False, error: str | None = None) -> Decision:
    """The outcome of one attempt. ``codes``: per rank, None when a rank left no exit code.
    ``cause``: what a requeue request is counted as (preempted | timeout | requeue), from the scheduler.
    ``attempts``: run.json's attempts before this one ended (this one excluded). ``error``: run.json's
    error text written by the runtime, if any."""
    code = worst_code(codes)
    if cancel_requested:
        return Decision("cancelled", "cancelled", False, code, "cancelled by `unigen cancel`")
    if code == 0:
        return Decision("completed", "completed", False, 0)
    ended = list(attempts)
    if code == EXIT_REQUEUE:
        assert cause in REQUEUE_REASONS, cause
        ended.append({"exit_reason": cause})
        why = budget_exhausted(ended, slurm)
        if why:
            return Decision(cause, "failed", False, code, why)
        return Decision(cause, "requeued", True, code)
    if EXIT_FATAL in codes:  # whichever rank hit it; the others usually crash after it (exit 1)
        return Decision("crashed", "failed", False, EXIT_FATAL,
                        error or "a rank stopped on a user error (exit 2): see the rank logs")
    ended.append({"exit_reason": "crashed"})
    why = budget_exhausted(ended, slurm)
    if why:
        return Decision("crashed", "failed", False, code, f"{why}; last error: {error}" if error else why)
    return Decision("crashed", "requeued", True, code)


def requeue_cause(info: dict[str, str] | None, *, grace_s: int, now_ts: float) -> str:
    """Why the ranks were told to stop, from ``scontrol show job``: ``preempted`` when slurmctld set
    PreemptTime, ``timeout`` when the time limit is within the signal grace time (plus a minute of
    slack: slurmctld checks limits every 30 s), else ``requeue`` (a signal sent by hand)."""
    from unigen.orchestrator.launchers.slurm_tools import parse_time, present

    if info is None:
        return "requeue"
    if present(info.get("PreemptTime")):
        return "preempted"
    end = parse_time(info.get("EndTime"))
    if end is not None and end.timestamp() - now_ts <= grace_s + 60:
        return "timeout"
    return "requeue"
