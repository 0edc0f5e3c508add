"""The attempt policy of every launcher (local, Ray, SLURM), in one place and free of side effects.

What one rank's exit code means (``code_kind``, codes from ``unigen.orchestrator.exitcodes``):
- 0 ok; 75 requeue: it saved a committed checkpoint on a stop signal and asks to be started again;
- 2 fatal: a user error a restart cannot fix;
- killed by a signal (Popen's -N, or 128+N as srun and shells report it): signal;
- a worker that vanished (``LOST``) or a rank that left no exit code (None): lost;
- anything else: crash.

How the ranks' codes make one attempt's outcome (``classify``, the "worst rank wins" rule):
all ok -> completed; only ok and requeue -> requeue (every rank that had not finished saved, so the
commit exists); any fatal -> fatal; otherwise crashed, with the code of the rank that failed first.

What happens next (``decide``), given the budgets used by the attempts before this one:
- completed -> done;
- a cancel (``unigen cancel``, a stopped driver or supervisor) -> cancel, whatever the codes;
- requeue -> requeue (start again from that checkpoint). A requeue is NOT a failure: it never uses
  the restart budget, only ``max_requeues`` (slurm.max_requeues; elsewhere the ``MAX_REQUEUES`` loop
  guard); past it -> give up;
- fatal -> give up, no budget used;
- crashed (crash, signal, lost) -> restart from the newest committed checkpoint while
  ``restarts_used < max_restarts`` (local.max_restarts, ray.max_failures, slurm.max_failures),
  else give up.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from unigen.orchestrator.exitcodes import EXIT_CRASH, EXIT_FATAL, EXIT_OK, EXIT_REQUEUE, SIGNAL_BASE

# When one rank ends badly its peers are usually blocked in a collective: they get this long to notice
# (and exit by themselves) before they are stopped.
PEER_GRACE_S = 10.0
# After a cancel the ranks save a checkpoint before they exit; a save of a big model takes a while.
CANCEL_GRACE_S = 300.0
# A loop guard, not a budget: every requeue follows a committed checkpoint.
MAX_REQUEUES = 1000
# poll() of a worker that vanished (its actor or node died): not an exit code a process can return.
LOST = -1000


def code_kind(code: int | None) -> str:
    """What one rank's exit code means: ok | requeue | fatal | signal | lost | crash."""
    if code is None or code == LOST:
        return "lost"
    if code == EXIT_OK:
        return "ok"
    if code == EXIT_REQUEUE:
        return "requeue"
    if code == EXIT_FATAL:
        return "fatal"
    if code < 0 or SIGNAL_BASE < code <= SIGNAL_BASE + 64:
        return "signal"
    return "crash"


def is_failure(code: int | None) -> bool:
    """A rank ended badly (anything but ok and requeue)."""
    return code_kind(code) not in ("ok", "requeue")


def describe_code(code: int | None) -> str:
    if code is None:
        return "left no exit code"
    if code == LOST:
        return "lost (its worker or node died)"
    if code < 0:
        return f"killed by signal {-code}"
    if code_kind(code) == "signal":
        return f"exited {code} (killed by signal {code - SIGNAL_BASE})"
    return f"exited {code}"


def first_failure(codes: Sequence[int | None]) -> int | None:
    """The first rank that ended badly while others may still run; None in ``codes`` is a rank still
    running here (None: none has failed)."""
    return next((rank for rank, code in enumerate(codes) if code is not None and is_failure(code)), None)


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended. ``reason``: completed | requeue | fatal | crashed."""

    reason: str
    codes: tuple[int | None, ...]
    detail: str
    exit_code: int = 0  # the code that says why: the first failing rank's (75 for a requeue)


def classify(codes: Sequence[int | None], first_bad: int | None = None) -> Outcome:
    """One outcome for all the ranks' codes (None: a rank that left no code, a crash with code 1).

    ``first_bad`` is the rank seen failing first: the cause, while its peers usually fail after it
    (a collective whose partner vanished); it comes first in ``detail`` and gives ``exit_code``."""
    codes = tuple(None if c is None else int(c) for c in codes)
    bad = [(r, c) for r, c in enumerate(codes) if is_failure(c)]
    bad.sort(key=lambda rc: rc[0] != first_bad)
    detail = "; ".join(f"rank {r} {describe_code(c)}" for r, c in bad[:4])
    if all(c == EXIT_OK for c in codes):
        return Outcome("completed", codes, "all ranks exited 0")
    if not bad:
        return Outcome("requeue", codes, f"ranks saved a checkpoint and asked to be restarted (exit {EXIT_REQUEUE})",
                       EXIT_REQUEUE)
    if EXIT_FATAL in codes:  # whichever rank hit it; the others usually crash after it (exit 1)
        return Outcome("fatal", codes, detail, EXIT_FATAL)
    code = bad[0][1]
    return Outcome("crashed", codes, detail, EXIT_CRASH if code is None else code)


def over_budget(restarts: int, requeues: int, *, max_restarts: int, max_requeues: int = MAX_REQUEUES) -> str | None:
    """Which budget the attempts so far went past ("requeues" | "restarts"), or None."""
    if requeues > max_requeues:
        return "requeues"
    if restarts > max_restarts:
        return "restarts"
    return None


@dataclass(frozen=True)
class Decision:
    """What follows an attempt. ``action``: done | requeue | restart | give_up | cancel."""

    action: str
    outcome: Outcome
    restarts: int  # restarts used, this attempt included
    requeues: int  # requeues used, this attempt included
    over: str | None = None  # why it gave up: fatal | restarts | requeues

    @property
    def again(self) -> bool:
        """Start another attempt (from the newest committed checkpoint)."""
        return self.action in ("requeue", "restart")

    @property
    def status(self) -> str:
        """The run's status after this attempt."""
        return {"done": "completed", "cancel": "cancelled", "give_up": "failed"}.get(self.action, "requeued")

    @property
    def exit_reason(self) -> str:
        """run.json's exit_reason of the attempt (SLURM names a requeue by its cause instead)."""
        named = {"done": "completed", "cancel": "cancelled"}
        return named.get(self.action, "requeue" if self.outcome.reason == "requeue" else "crashed")


def decide(outcome: Outcome, *, restarts_used: int, requeues_used: int, max_restarts: int,
           max_requeues: int = MAX_REQUEUES, cancelled: bool = False) -> Decision:
    """The step after an attempt; ``*_used``: spent by the attempts before this one."""
    restarts, requeues = restarts_used, requeues_used
    if cancelled:
        return Decision("cancel", outcome, restarts, requeues)
    if outcome.reason == "completed":
        return Decision("done", outcome, restarts, requeues)
    if outcome.reason == "fatal":
        return Decision("give_up", outcome, restarts, requeues, "fatal")
    if outcome.reason == "requeue":
        requeues += 1
    else:
        restarts += 1
    over = over_budget(restarts, requeues, max_restarts=max_restarts, max_requeues=max_requeues)
    if over:
        return Decision("give_up", outcome, restarts, requeues, over)
    return Decision("requeue" if outcome.reason == "requeue" else "restart", outcome, restarts, requeues)
