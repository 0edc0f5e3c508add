"""``launcher: ray``: the stages of a submission as one Ray Job on a Ray cluster.

The job's driver (``ray.driver``) runs the stages in order; for each attempt it places
``ray.workers`` actors in a placement group, each starting one rank of the per-rank runtime
(``python -m unigen.orchestrator.runtime RUN_DIR``, the same process every launcher starts), and acts
on the exit codes as ``attempt_policy`` says, with ``ray.max_failures`` as the restart budget. See
runbooks/running-on-ray.md.

Everything goes through the run folder, which must be on storage shared by the submitter, the
driver and every worker: run.json (status, attempts, progress), logs/rank-<r>.log, checkpoints.
This module only submits, watches (``--wait``), cancels and asks Ray for the job's status.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

from unigen.orchestrator.config.recorded import recorded_profile
from unigen.orchestrator.errors import UserError
from unigen.orchestrator.exitcodes import EXIT_INTERRUPTED
from unigen.orchestrator.launchers.ray.job import (
    ACTIVE_JOB_STATES,
    TERMINAL_JOB_STATES,
    build_job,
    connect,
    job_status,
)
from unigen.orchestrator.runs import TERMINAL, RunLedger
from unigen.orchestrator.secrets import redact

STATUS_POLL_S = 2.0  # how often --wait asks Ray for the job's status
UNREACHABLE_GIVE_UP_S = 600.0  # --wait stops waiting when Ray does not answer this long


class RayLauncher:
    name = "ray"

    def __init__(self) -> None:
        self._clients: dict[str, Any] = {}

    def _client(self, address: str):
        if address not in self._clients:
            self._clients[address] = connect(address)
        return self._clients[address]

    # -- submit -----------------------------------------------------------------------------------
    def launch(self, ledgers: list[RunLedger], sub, *, wait: bool) -> int:
        cfg = sub.profile.ray
        records = [ledger.read() for ledger in ledgers]
        self._refuse_if_still_running(records)
        run_ids = [r["run_id"] for r in records]
        # A resumed run was submitted before: Ray keeps old submission ids, so number the new one.
        earlier = list((records[0].get("ray") or {}).get("job_ids") or [])
        spec = build_job(cfg, [str(ledger.paths.root) for ledger in ledgers], run_ids, cwd=os.getcwd(),
                         resubmission=len(earlier))
        for ledger in ledgers:  # before submitting: `unigen cancel` may follow at once
            before = (ledger.read().get("ray") or {}).get("job_ids") or []
            ledger.set_launcher_info("ray", {"job_id": spec.submission_id, "address": cfg.address,
                                             "job_ids": [*before, spec.submission_id]})
        try:
            client = self._client(cfg.address)
            client.submit_job(entrypoint=spec.entrypoint, runtime_env=spec.runtime_env,
                              submission_id=spec.submission_id, metadata=spec.metadata,
                              entrypoint_num_cpus=spec.entrypoint_num_cpus)
        except Exception as e:
            message = str(e) if isinstance(e, UserError) else f"Ray refused the job: {type(e).__name__}: {e}"
            for ledger in ledgers:
                ledger.set_status("failed", error=f"not submitted: {message}"[:500])
            raise UserError(message) from None
        print(f"submitted Ray job {spec.submission_id} ({len(ledgers)} stage(s)) to {cfg.address}",
              file=sys.stderr)
        if not wait:
            print(f"follow with `unigen status {ledgers[-1].run_id}`, `unigen logs {ledgers[0].run_id} --follow` "
                  f"or `ray job logs {spec.submission_id}`")
            return 0
        return self._attached(ledgers, client, spec.submission_id)

    def _refuse_if_still_running(self, records: list[dict[str, Any]]) -> None:
        """Two drivers on one run folder would fight over it (``unigen resume`` of a live run)."""
        for record in records:
            state = self.scheduler_state(record)
            if state in ACTIVE_JOB_STATES:
                job = record["ray"]["job_id"]
                raise UserError(f"run {record['run_id']} still has Ray job {job} {state}: `unigen cancel "
                                f"{record['run_id']}` and wait for it to end, then resume")

    def _attached(self, ledgers: list[RunLedger], client, submission_id: str) -> int:
        from unigen.orchestrator.launchers.progress import ProgressView, print_outcome

        interrupts: list[int] = []
        previous = {s: signal.signal(s, lambda signum, frame: interrupts.append(signum))
                    for s in (signal.SIGINT, signal.SIGTERM)}
        state, asked_cancel, last_poll, unreachable_since = "PENDING", False, 0.0, None
        try:
            with ProgressView() as view:
                while True:
                    for ledger in ledgers:
                        view.tick(ledger)
                    if interrupts and not asked_cancel:
                        asked_cancel = True
                        view.write("cancelling: every rank saves a checkpoint, then stops "
                                   "(interrupt again to detach; the job keeps going)")
                        for ledger in ledgers:
                            ledger.request_cancel()  # the flag the driver polls in run.json
                    elif len(interrupts) > 1:
                        view.write(f"detached; Ray job {submission_id} goes on: `unigen status`, `unigen cancel`")
                        return EXIT_INTERRUPTED
                    if time.monotonic() - last_poll >= STATUS_POLL_S:
                        last_poll = time.monotonic()
                        try:
                            state = job_status(client, submission_id)
                            unreachable_since = None
                        except Exception as e:  # noqa: BLE001 - a head restarting: keep trying a while
                            if unreachable_since is None:
                                unreachable_since = last_poll
                                view.write(f"warning: cannot read the Ray job's status ({type(e).__name__}); retrying")
                            elif last_poll - unreachable_since > UNREACHABLE_GIVE_UP_S:
                                view.write(f"error: Ray has not answered for {UNREACHABLE_GIVE_UP_S:.0f} s; "
                                           "stopped waiting (the job may go on: `unigen status`, "
                                           f"`ray job status {submission_id}`)")
                                return 1
                        if state in TERMINAL_JOB_STATES:
                            break
                    time.sleep(0.3)
                _settle(ledgers, client, submission_id, state)
                for ledger in ledgers:
                    view.tick(ledger, force=True)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return print_outcome(ledgers)

    # -- preview ----------------------------------------------------------------------------------
    def describe(self, sub) -> str:
        cfg = sub.profile.ray
        run_dirs = [str(sub.run_root / f"<{stage.recipe.name} run id>") for stage in sub.stages]
        run_ids = [f"<{sub.stages[0].recipe.name} run id>"]
        spec = build_job(cfg, run_dirs, run_ids, cwd=os.getcwd())
        bundle = {"CPU": cfg.cpus_per_worker, **({"GPU": cfg.gpus_per_worker} if cfg.gpus_per_worker else {})}
        lines = [
            f"ray launcher: one Ray Job for {len(sub.stages)} stage(s), run in order by its driver",
            f"  address:        {cfg.address}",
            f"  submission id:  {spec.submission_id}",
            f"  entrypoint:     {spec.entrypoint}",
            f"  entrypoint resources: {spec.entrypoint_num_cpus} CPU (the driver only watches)",
            "  runtime_env:    " + json.dumps(redact(spec.runtime_env), sort_keys=True),
            f"  workers:        {cfg.workers} x {json.dumps(bundle)} in one placement group "
            f"(strategy {cfg.placement_strategy}), one rank each:",
            f"                  python -m unigen.orchestrator.runtime <run folder> with RANK=0..{cfg.workers - 1}, "
            f"WORLD_SIZE={cfg.workers}, LOCAL_RANK per node, MASTER_ADDR=<rank 0's node>, MASTER_PORT=<free there>",
            f"  rank env:       OMP_NUM_THREADS={max(1, int(cfg.cpus_per_worker))}"
            + ("" if cfg.gpus_per_worker else ", DS_ACCELERATOR=cpu, CUDA_VISIBLE_DEVICES=''")
            + "".join(f", {k}={v}" for k, v in sub.profile.env.items()) + " (profile env)",
            f"  failures:       a worker that dies -> the group is stopped and restarted from the last committed "
            f"checkpoint, at most ray.max_failures={cfg.max_failures} times; all ranks exit 75 -> restarted at "
            "once; exit 2 -> failed",
            f"  cancel:         ranks get SIGTERM, save, stop; killed after ray.cancel_grace_s={cfg.cancel_grace_s}",
            f"  storage:        {sub.run_root} must be at the same path on the submitter and every Ray node "
            "(shared disk); relative data paths resolve against the folder you submit from",
        ]
        return "\n".join(lines)

    # -- operate ----------------------------------------------------------------------------------
    def cancel(self, ledger: RunLedger) -> str:
        record = ledger.read()
        run_id = record["run_id"]
        if record["status"] in TERMINAL:
            return f"{run_id} is {record['status']}: nothing to cancel"
        ledger.request_cancel()  # the flag the driver polls (run.json is on storage it shares with us)
        job = (record.get("ray") or {}).get("job_id")
        state = self.scheduler_state(record)
        if state in ACTIVE_JOB_STATES:
            return (f"asked Ray job {job} to stop {run_id}: its ranks save a checkpoint, then the run is "
                    "marked cancelled")
        if state == "unreachable":
            return (f"cannot reach Ray at {recorded_profile(record).ray.address}: the cancel request is in "
                    f"run.json; the job's driver acts on it if it is still running")
        ledger.set_status("cancelled",
                          error=f"cancelled (the Ray job {job or '(none)'} was {state or 'not submitted'})")
        return f"{run_id} marked cancelled (Ray job {job or '(none)'}: {state or 'never submitted'})"

    def holds(self, record: dict[str, Any]) -> bool:
        return self.scheduler_state(record) in ACTIVE_JOB_STATES

    def scheduler_state(self, record: dict[str, Any]) -> str | None:
        job = (record.get("ray") or {}).get("job_id")
        if not job:
            return None
        try:
            return job_status(self._client(_address(record)), job)
        except UserError:
            return "unreachable"
        except Exception as e:  # noqa: BLE001 - Ray answers 404 for a job it no longer knows
            return "unknown job" if "not" in str(e).lower() and "exist" in str(e).lower() else "unreachable"


def _address(record: dict[str, Any]) -> str:
    """Where the run's Ray job was submitted (recorded at submit), else its profile's ``ray.address``."""
    return (record.get("ray") or {}).get("address") or recorded_profile(record).ray.address


def _settle(ledgers: list[RunLedger], client, submission_id: str, state: str) -> None:
    """The job ended: a stage its driver did not finish (driver killed, head lost) is failed, with
    Ray's reason, instead of staying "running" forever."""
    reason = ""
    try:
        info = client.get_job_info(submission_id)
        message = (getattr(info, "message", "") or "").strip()
        reason = message.splitlines()[0][:300] if message else ""
    except Exception:  # noqa: BLE001 - the reason is a nicety
        pass
    for ledger in ledgers:
        record = ledger.read()
        if record["status"] in TERMINAL:
            continue
        why = f"the Ray job {submission_id} ended {state} before this run finished"
        why += f" ({reason})" if reason else ""
        why += f"; driver output: `ray job logs {submission_id}`"
        cancelled = bool(record.get("cancel_requested"))
        ledger.end_attempt(exit_reason="cancelled" if cancelled else "lost", exit_code=None,
                           status="cancelled" if cancelled else "failed")
        ledger.set_error(why, keep_first=True)


LAUNCHER = RayLauncher()
