"""Exit codes shared by the per-rank runtime and every launcher.

- 0   EXIT_OK: the run reached max_steps, saved and exported.
- 1   EXIT_CRASH: an unexpected error; launchers restart from the last committed checkpoint while the
      failure budget allows (local.max_restarts, slurm.max_failures, ray.max_failures).
- 2   EXIT_FATAL: a mistake a restart cannot fix (bad recipe, unverifiable checkpoints, init_from that
      does not match): never restarted; the run is marked failed with the message in run.json.
- 75  EXIT_REQUEUE: preempted, a committed checkpoint was written: start again (EX_TEMPFAIL).
"""
from unigen.orchestrator.signals import EXIT_REQUEUE

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_FATAL = 2

__all__ = ["EXIT_OK", "EXIT_CRASH", "EXIT_FATAL", "EXIT_REQUEUE"]
