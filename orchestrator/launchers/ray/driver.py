"""The Ray job driver: the entrypoint of the Ray Job that ``unigen submit --profile <ray profile>``
submits. It runs the stages of one submission in order, each through ``launchers.attempts.RunAttempts``
with its workers placed by ``ray.group.RayGroup``, and exits 0 only when every stage completed.

    python -m unigen.orchestrator.launchers.ray.driver --job-id ID [--cwd DIR] RUN_DIR [RUN_DIR ...]

It needs nothing but the run folders: workers, resources and the failure budget come from the
profile recorded in each run.json. The run folders must be visible at the same path to the
submitter, this driver and every worker (shared storage); ``--cwd`` is the folder the submit ran
in, where relative data paths of a recipe point.

SIGTERM (``ray job stop``, which waits RAY_JOB_STOP_WAIT_TIME_S before SIGKILL; the launcher sets it
from ray.cancel_grace_s) cancels like ``unigen cancel``: ranks save, the run is cancelled.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from unigen.orchestrator.exitcodes import EXIT_FATAL
from unigen.orchestrator.launchers import LOG_FORMAT
from unigen.orchestrator.runs import RunLedger

log = logging.getLogger("unigen.launcher.ray")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unigen.orchestrator.launchers.ray.driver")
    parser.add_argument("--job-id", required=True, help="the Ray job submission id (recorded per attempt)")
    parser.add_argument("--cwd", default=None, help="the folder `unigen submit` ran in")
    parser.add_argument("run_dirs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format=LOG_FORMAT)
    missing = [str(d) for d in args.run_dirs if not (d / "run.json").is_file()]
    if missing:
        print(f"error: run folder(s) not visible where the Ray driver runs: {', '.join(missing)}; "
              "storage.run_root must be on storage shared by the submitter and every Ray node", file=sys.stderr)
        return EXIT_FATAL
    stop = threading.Event()  # set by SIGTERM/SIGINT, polled by the attempt loop (a handler only sets it)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())

    import ray

    from unigen.orchestrator.config.recorded import recorded_profile
    from unigen.orchestrator.launchers.attempts import RunAttempts, Settings, run_stages
    from unigen.orchestrator.launchers.ray.group import RayGroup

    ray.init(log_to_driver=False)  # RAY_ADDRESS comes from the job supervisor
    ledgers = [RunLedger(d) for d in args.run_dirs]

    def attempts_for(ledger: RunLedger) -> RunAttempts:
        profile = recorded_profile(ledger.read())
        cfg = profile.ray
        env = {"OMP_NUM_THREADS": str(max(1, int(cfg.cpus_per_worker))), **profile.env}
        if not cfg.gpus_per_worker:
            env.setdefault("DS_ACCELERATOR", "cpu")
        settings = Settings(job_id=args.job_id, gpus=cfg.gpus_per_worker > 0, max_failures=cfg.max_failures,
                            cancel_grace_s=float(cfg.cancel_grace_s), cwd=args.cwd, env=env)
        return RunAttempts(ledger, lambda: RayGroup(workers=cfg.workers, cpus_per_worker=cfg.cpus_per_worker,
                                                    gpus_per_worker=cfg.gpus_per_worker,
                                                    strategy=cfg.placement_strategy), settings, stopping=stop.is_set)

    try:
        return run_stages(ledgers, attempts_for, stopping=stop.is_set)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
