"""The attempt policy every launcher (local, Ray, SLURM) shares: what the ranks' exit codes of one
attempt mean, and what follows given the budgets (one table of cases)."""
from __future__ import annotations

import pytest

from unigen.orchestrator.exitcodes import EXIT_CRASH, EXIT_FATAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_REQUEUE, from_returncode
from unigen.orchestrator.launchers.attempt_policy import (
    LOST,
    MAX_REQUEUES,
    classify,
    code_kind,
    decide,
    first_failure,
    over_budget,
)

M = MAX_REQUEUES

# rank exit codes, restarts used, requeues used, max restarts, cancelled
#   -> outcome reason, exit code recorded, decision, restarts used after, requeues used after, why it gave up
CASES = {
    "all ok":                      ([0, 0], 0, 0, 3, False, "completed", 0, "done", 0, 0, None),
    "all saved, requeue":          ([75, 75], 0, 0, 3, False, "requeue", 75, "requeue", 0, 1, None),
    "one finished, one saved":     ([0, 75], 0, 0, 3, False, "requeue", 75, "requeue", 0, 1, None),
    "requeue with no restart left":  ([75, 75], 3, 5, 3, False, "requeue", 75, "requeue", 3, 6, None),
    "requeue with max_restarts 0":   ([75, 0], 0, 0, 0, False, "requeue", 75, "requeue", 0, 1, None),
    "crash, budget left":          ([1, 0], 1, 0, 3, False, "crashed", 1, "restart", 2, 0, None),
    "crash, budget spent":         ([1, 0], 3, 0, 3, False, "crashed", 1, "give_up", 4, 0, "restarts"),
    "crash, no restarts allowed":  ([0, 1], 0, 7, 0, False, "crashed", 1, "give_up", 1, 7, "restarts"),
    "config error, budget left":   ([2, 2], 0, 0, 99, False, "fatal", 2, "give_up", 0, 0, "fatal"),
    "config error beats a crash":  ([2, 1], 0, 0, 3, False, "fatal", 2, "give_up", 0, 0, "fatal"),
    "crash beside a config error": ([1, 2], 0, 0, 3, False, "fatal", 2, "give_up", 0, 0, "fatal"),
    "config error and a kill":     ([2, 137], 0, 0, 3, False, "fatal", 2, "give_up", 0, 0, "fatal"),
    "killed by a signal (Popen)":  ([-9, 0], 0, 0, 3, False, "crashed", -9, "restart", 1, 0, None),
    "killed by a signal (srun)":   ([137, 0], 0, 0, 3, False, "crashed", 137, "restart", 1, 0, None),
    "first failing rank wins":     ([1, -9], 0, 0, 3, False, "crashed", 1, "restart", 1, 0, None),
    "requeue beside a crash":      ([75, 1], 0, 0, 3, False, "crashed", 1, "restart", 1, 0, None),
    "requeue beside a SIGTERM death": ([75, -15], 2, 4, 2, False, "crashed", -15, "give_up", 3, 4, "restarts"),
    "lost worker":                 ([0, LOST], 0, 0, 3, False, "crashed", LOST, "restart", 1, 0, None),
    "rank left no exit code":      ([None, 75], 0, 0, 3, False, "crashed", 1, "restart", 1, 0, None),
    "loop guard not reached":      ([75, 75], 0, M - 1, 3, False, "requeue", 75, "requeue", 0, M, None),
    "loop guard reached":          ([75, 75], 0, M, 3, False, "requeue", 75, "give_up", 0, M + 1, "requeues"),
    "cancel after the ranks saved": ([75, 75], 0, 0, 3, True, "requeue", 75, "cancel", 0, 0, None),
    "cancel wins over a crash":    ([1, 75], 3, 0, 3, True, "crashed", 1, "cancel", 3, 0, None),
    "cancel wins over completed":  ([0, 0], 0, 0, 3, True, "completed", 0, "cancel", 0, 0, None),
}


@pytest.mark.parametrize("codes, restarts, requeues, max_restarts, cancelled, reason, code, action, "
                         "restarts_after, requeues_after, over", list(CASES.values()), ids=list(CASES))
def test_attempt_policy(codes, restarts, requeues, max_restarts, cancelled, reason, code, action,
                        restarts_after, requeues_after, over):
    outcome = classify(codes)
    assert (outcome.reason, outcome.exit_code) == (reason, code)
    d = decide(outcome, restarts_used=restarts, requeues_used=requeues, max_restarts=max_restarts,
               cancelled=cancelled)
    assert (d.action, d.restarts, d.requeues, d.over) == (action, restarts_after, requeues_after, over)
    assert d.again == (action in ("requeue", "restart"))
    assert d.status == {"done": "completed", "cancel": "cancelled", "give_up": "failed"}.get(action, "requeued")


@pytest.mark.parametrize("code, kind", [(EXIT_OK, "ok"), (EXIT_REQUEUE, "requeue"), (EXIT_CRASH, "crash"),
                                        (EXIT_FATAL, "fatal"), (3, "crash"), (-9, "signal"), (137, "signal"),
                                        (143, "signal"), (EXIT_INTERRUPTED, "signal"), (LOST, "lost"),
                                        (None, "lost")])
def test_what_one_exit_code_means(code, kind):
    assert code_kind(code) == kind


def test_the_rank_that_failed_first_is_named_first():
    outcome = classify([1, -9], first_bad=1)
    assert outcome.exit_code == -9
    assert outcome.detail == "rank 1 killed by signal 9; rank 0 exited 1"
    assert "lost" in classify([0, LOST]).detail
    assert "killed by signal 15" in classify([143]).detail and "no exit code" in classify([None]).detail
    assert first_failure([None, 75, None, 1]) == 3 and first_failure([None, 0, 75]) is None


def test_budgets_and_return_codes():
    assert over_budget(2, 10, max_restarts=2, max_requeues=10) is None
    assert over_budget(3, 0, max_restarts=2) == "restarts"
    assert over_budget(0, 11, max_restarts=2, max_requeues=10) == "requeues"
    assert (from_returncode(-9), from_returncode(0), from_returncode(75)) == (137, 0, 75)
