"""Exit codes shared by the per-rank runtime and every launcher (the one place they are defined).

- 0   EXIT_OK: the run reached max_steps, saved and exported.
- 1   EXIT_CRASH: an unexpected error; launchers restart from the last committed checkpoint while the
      failure budget allows (local.max_restarts, slurm.max_failures, ray.max_failures).
- 2   EXIT_FATAL: a mistake a restart cannot fix (bad recipe, unverifiable checkpoints, init_from that
      does not match): never restarted; the run is marked failed with the message in run.json.
- 75  EXIT_REQUEUE: preempted, a committed checkpoint was written: start again (EX_TEMPFAIL from
      sysexits.h, "temporary failure, the user is invited to retry"). Not a failure: it never
      counts against the failure budget.
- 2   EXIT_USAGE (same value): a command refused its command line, recipe or profile; nothing started.
- 128+N: killed by signal N, as a shell or srun reports it (``SIGNAL_BASE``); Popen reports -N.
- 130 EXIT_INTERRUPTED: a command (``unigen submit --wait``) stopped by Ctrl-C (128 + SIGINT).

What a launcher does with each code is ``unigen.orchestrator.launchers.attempt_policy``.
"""
EXIT_OK = 0
EXIT_CRASH = 1
EXIT_FATAL = 2
EXIT_USAGE = 2  # a CLI refusing its input: the same "fix it, do not retry" meaning as EXIT_FATAL
EXIT_REQUEUE = 75
SIGNAL_BASE = 128
EXIT_INTERRUPTED = SIGNAL_BASE + 2  # SIGINT


def from_returncode(returncode: int) -> int:
    """A Popen returncode as an exit code: -N (killed by signal N) becomes 128+N."""
    return returncode if returncode >= 0 else SIGNAL_BASE - returncode
