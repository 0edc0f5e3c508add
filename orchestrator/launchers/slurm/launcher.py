"""``launcher: slurm``: each stage of a submission is one SLURM job; stage N+1 waits on stage N with
``--dependency=afterok``. See runbooks/running-on-slurm.md.

Submitting side (this module, torch-free): submit each run through submitit's executor
(``slurm.submission``: the job folder is ``RUN_DIR/slurm``) and record the job id in run.json
(``slurm.job_id``); the job side is ``slurm.job``. What the scheduler says of a job is read with
``scontrol`` (``slurm.tools``; why not submitit's sacct-based state: ``slurm.submission``).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any

from unigen.orchestrator.config.recorded import recorded_profile
from unigen.orchestrator.errors import UserError
from unigen.orchestrator.exitcodes import EXIT_INTERRUPTED
from unigen.orchestrator.launchers.progress import print_outcome
from unigen.orchestrator.launchers.slurm import submission, tools
from unigen.orchestrator.launchers.slurm.job import cancel_later_stages
from unigen.orchestrator.runs import ACTIVE, TERMINAL, RunLedger, new_run_id, now_iso

POLL_S = 2.0
SCHEDULER_POLL_S = 5.0
# A job the scheduler reports ended while run.json is not terminal yet: give the driver this long to
# write its last words before the run is marked failed (a job killed before its driver could).
LOST_AFTER_S = 20.0


class SlurmLauncher:
    name = "slurm"

    # -- submit ---------------------------------------------------------------------------------
    def launch(self, ledgers: list[RunLedger], sub, *, wait: bool) -> int:
        later = [str(lg.paths.root) for lg in ledgers]
        submitted: list[str] = []
        previous: str | None = None
        for i, ledger in enumerate(ledgers):
            record = ledger.read()
            # Where the first submission ran (`unigen resume` may run elsewhere; data paths are relative).
            workdir = (record.get("slurm") or {}).get("workdir") or os.getcwd()
            dependency = f"afterok:{previous}" if previous else None
            try:
                job_id, path = submission.submit(recorded_profile(record), run_id=record["run_id"],
                                                 run_dir=ledger.paths.root, workdir=workdir, dependency=dependency)
            except tools.SlurmError as err:
                self._abandon(ledgers, submitted, f"sbatch refused stage {i + 1}: {err}")
                raise UserError(f"sbatch refused stage {i + 1} ({record['run_id']}): {err}. Fix the profile's slurm "
                                "section (`unigen submit ... --dry-run` prints the script)") from None
            submitted.append(job_id)
            # budget_from: `unigen resume` submits a run again; its earlier attempts no longer count.
            info = {"job_id": job_id, "script": str(path), "submitted_at": now_iso(), "dependency": dependency,
                    "batch_log": str(ledger.paths.logs / f"slurm-{job_id}.out"), "later_runs": later[i + 1:],
                    "budget_from": len(record["attempts"]), "workdir": workdir}
            ledger.set_launcher_info("slurm", info)
            print(f"stage {i + 1}: run {record['run_id']} submitted as SLURM job {job_id}"
                  + (f" ({dependency})" if dependency else ""), file=sys.stderr)
            previous = job_id
        if not wait:
            print(f"follow with `unigen status {ledgers[-1].run_id}` or `unigen logs {ledgers[0].run_id} --follow`")
            return 0
        return self._wait(ledgers)

    def _abandon(self, ledgers: list[RunLedger], submitted: list[str], why: str) -> None:
        for ledger, job_id in zip(ledgers, submitted):
            try:
                submission.cancel(job_id, ledger.paths.root)
            except tools.SlurmError:
                pass
        for ledger in ledgers:
            ledger.set_status("failed", error=why)

    # -- wait -----------------------------------------------------------------------------------
    def _wait(self, ledgers: list[RunLedger]) -> int:
        from unigen.orchestrator.launchers.progress import ProgressView

        watch = _Watch(ledgers)
        try:
            with ProgressView() as view:
                while not watch.done():
                    for ledger in ledgers:
                        view.tick(ledger)
                    for line in watch.poll_scheduler():
                        view.write(line)
                    time.sleep(POLL_S)
                for ledger in ledgers:
                    view.tick(ledger, force=True)
        except KeyboardInterrupt:
            print("\nstopped waiting; the jobs keep running on the cluster: `unigen status`, "
                  f"`unigen cancel {ledgers[0].run_id}`", file=sys.stderr)
            return EXIT_INTERRUPTED
        return print_outcome(ledgers)

    # -- preview, cancel, state -----------------------------------------------------------------
    def describe(self, sub) -> str:
        out = []
        for stage in sub.stages:
            recipe = stage.recipe
            run_id = new_run_id(sub.name or recipe.name)  # a fresh id at submit time (time + random)
            run_dir = sub.run_root / run_id
            dependency = "afterok:<job id of stage {}>".format(stage.index - 1) if stage.index > 1 else None
            out.append(f"# ---- stage {stage.index} ({recipe.stage}, {stage.path}): the script submitit hands to "
                       f"sbatch, kept as {run_dir}/slurm/<job id>_submission.sh")
            out.append(submission.preview(sub.profile, run_id=run_id, run_dir=run_dir, workdir=os.getcwd(),
                                          dependency=dependency))
        return "\n".join(out)

    def cancel(self, ledger: RunLedger) -> str:
        record = ledger.read()
        run_id, slurm = record["run_id"], record.get("slurm") or {}
        if record["status"] in TERMINAL:
            return f"{run_id} is {record['status']}: nothing to cancel"
        job_id = slurm.get("job_id")
        if not job_id:
            ledger.set_status("cancelled", error="cancelled before it was submitted")
            return f"{run_id} marked cancelled (it had no SLURM job)"
        # The driver sees this before it starts the ranks and while they run (`unigen cancel` sets it too).
        ledger.request_cancel()
        info = tools.job_info(job_id)
        state = (info or {}).get("JobState")
        if state in ("RUNNING", "COMPLETING", "CONFIGURING"):
            tools.signal_steps(job_id, "USR2")  # the ranks save a checkpoint; the driver ends the run
            return (f"asked SLURM job {job_id} of {run_id} to save a checkpoint and stop; "
                    "it ends as cancelled (follow with `unigen status`)")
        if info is not None and state not in tools.ENDED_STATES:
            submission.cancel(job_id, ledger.paths.root)
        ledger.end_attempt(exit_reason="cancelled", exit_code=None, status="cancelled")
        ledger.set_error("cancelled by `unigen cancel`")
        cancel_later_stages(record, "was cancelled")
        return f"cancelled SLURM job {job_id} of {run_id} ({state or 'no longer known to SLURM'})"

    def holds(self, record: dict[str, Any]) -> bool:
        """True while slurmctld has the run's job in any state but ended (PENDING, RUNNING, REQUEUED,
        SUSPENDED, ...); when it cannot be asked, True for a run that run.json says is active."""
        job_id = (record.get("slurm") or {}).get("job_id")
        if not job_id:
            return False
        try:
            info = tools.job_info(job_id)
        except tools.SlurmError:
            return record.get("status") in ACTIVE
        return info is not None and info.get("JobState") not in tools.ENDED_STATES

    def scheduler_state(self, record: dict[str, Any]) -> str | None:
        job_id = (record.get("slurm") or {}).get("job_id")
        if not job_id:
            return None
        try:
            return f"job {job_id} " + tools.describe_state(tools.job_info(job_id))
        except tools.SlurmError as err:
            return f"job {job_id}: unknown ({err})"


class _Watch:
    """The --wait loop's view of the scheduler: state changes to print, and jobs that ended without
    their driver recording it (killed, cancelled outside unigen), which would otherwise wait forever."""

    def __init__(self, ledgers: list[RunLedger]):
        self.ledgers = ledgers
        self._last_poll = 0.0
        self._states: dict[str, str] = {}
        self._ended_since: dict[str, float] = {}

    def done(self) -> bool:
        return all(_status(lg) in TERMINAL for lg in self.ledgers)

    def poll_scheduler(self) -> list[str]:
        now = time.monotonic()
        if now - self._last_poll < SCHEDULER_POLL_S:
            return []
        self._last_poll = now
        lines = []
        for ledger in self.ledgers:
            record = ledger.read()
            job_id = (record.get("slurm") or {}).get("job_id")
            if record["status"] in TERMINAL or not job_id:
                continue
            try:
                info = tools.job_info(job_id)
            except tools.SlurmError as err:
                lines.append(f"{record['run_id']}: {err}")
                continue
            state = tools.describe_state(info)
            if self._states.get(job_id) != state:
                self._states[job_id] = state
                lines.append(f"{record['run_id']}: SLURM job {job_id} {state}")
            ended = info is None or info.get("JobState") in tools.ENDED_STATES
            if not ended:
                self._ended_since.pop(job_id, None)
            elif now - self._ended_since.setdefault(job_id, now) > LOST_AFTER_S:
                self._mark_lost(ledger, job_id, state)
        return lines

    def _mark_lost(self, ledger: RunLedger, job_id: str, state: str) -> None:
        if _status(ledger) in TERMINAL:
            return
        ledger.end_attempt(exit_reason="lost", exit_code=None, status="failed")
        ledger.set_error(f"SLURM job {job_id} ended ({state}) before unigen recorded the end: see "
                         f"{ledger.paths.logs}/slurm-{job_id}.out")
        cancel_later_stages(ledger.read(), "failed")


def _status(ledger: RunLedger) -> str:
    try:
        return ledger.read()["status"]
    except UserError:
        return "queued"


LAUNCHER = SlurmLauncher()
