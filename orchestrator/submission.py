"""What ``unigen submit`` does once every stage validated: create one run folder per stage, then hand
them to the profile's launcher.

- Stage N+1 of a multi-recipe submission gets ``init_from: run:<stage N's run id>`` (unless its recipe
  names its own), so it starts from stage N's final committed checkpoint.
- A multi-stage submission gets a submission id recorded as ``parent`` in every stage's run.json; the
  MLflow parent run is created here when the store answers, else lazily by the first stage.
- Nothing is created before ``resolve_submission`` succeeded (see commands/submit.py), and a failure
  while creating the folders removes the ones this call created.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from unigen.orchestrator.config import ResolvedStage, Submission, recipe_sha256, world_of
from unigen.orchestrator.errors import UserError
from unigen.orchestrator.launchers import get_launcher
from unigen.orchestrator.runs import RunLedger, list_runs, new_run_id


def _run_name(sub: Submission, recipe_name: str) -> str:
    if not sub.name:
        return recipe_name
    return sub.name if len(sub.stages) == 1 else f"{sub.name}-{recipe_name}"


def create_runs(sub: Submission) -> list[RunLedger]:
    """One run folder (run.json status ``queued``) per stage, in order."""
    from unigen.orchestrator.tracking.store import display_uri, resolve_tracking_uri

    submission_id = new_run_id(sub.name or sub.stages[0].recipe.name) if len(sub.stages) > 1 else None
    ledgers: list[RunLedger] = []
    try:
        for stage in sub.stages:
            recipe = stage.recipe
            if stage.starts_from_previous:
                recipe = recipe.model_copy(update={"init_from": f"run:{ledgers[-1].run_id}"})
            uri = resolve_tracking_uri(None, recipe=recipe.tracking, profile=sub.profile.tracking,
                                       run_root=sub.run_root)
            ledgers.append(RunLedger.create(
                sub.run_root, run_id=new_run_id(_run_name(sub, recipe.name)), recipe=recipe,
                recipe_path=str(stage.path), recipe_sha256=recipe_sha256(recipe), profile=sub.profile,
                parent=submission_id, tracking_uri=display_uri(uri), workdir=os.getcwd()))
    except BaseException:
        for ledger in ledgers:
            shutil.rmtree(ledger.paths.root, ignore_errors=True)
        raise
    if submission_id is not None:
        from unigen.orchestrator.tracking import start_parent_run

        start_parent_run(submission_id, ledgers=ledgers)
    return ledgers


def grace_warnings(sub: Submission) -> list[str]:
    """A warning per stage whose last measured checkpoint save (the newest earlier run of the same
    recipe name under the run root) took longer than the profile's signal grace: a preemption would
    then kill the job in the middle of its save, and the run would fall back to an older checkpoint."""
    grace = sub.profile.slurm.signal_grace_s if sub.profile.slurm is not None else None
    if grace is None:
        return []
    earlier = list_runs(sub.run_root)
    out = []
    for stage in sub.stages:
        saves = [(r.get("created_at") or "", r["checkpoints"]["last_save_s"]) for r in earlier
                 if (r.get("recipe") or {}).get("name") == stage.recipe.name
                 and (r.get("checkpoints") or {}).get("last_save_s") is not None]
        if saves:
            last = max(saves)[1]
            if last >= grace:
                out.append(f"{stage.path}: the last run of {stage.recipe.name} took {last:.0f} s to save a checkpoint, "
                           f"but slurm.signal_grace_s is {grace} s: raise it (e.g. profile.slurm.signal_grace_s="
                           f"{int(last * 1.5) + 30}) or a preemption may interrupt the save")
    return out


def submit_stages(sub: Submission, *, wait: bool) -> int:
    """Create the runs and launch them; with ``wait``, stay attached until every stage ended.
    Returns the exit code of ``unigen submit``: 0 when submitted (or, with wait, when all completed)."""
    launcher = get_launcher(sub.profile.launcher)
    ledgers = create_runs(sub)
    for i, ledger in enumerate(ledgers, 1):
        print(f"stage {i}: run {ledger.run_id}  ({ledger.paths.root})", file=sys.stderr)
    return launcher.launch(ledgers, sub, wait=wait)


def submission_from_record(ledger: RunLedger) -> Submission:
    """The one-stage Submission of an existing run, rebuilt from its run.json (for ``unigen resume``):
    the recorded resolved recipe and profile, the world size of the profile as seen from here."""
    from unigen.orchestrator.config.model_section import check_model_section
    from unigen.orchestrator.config.recorded import recorded_profile, recorded_recipe
    from unigen.orchestrator.config.world import batch_problem
    from unigen.orchestrator.config.yamlload import Loc, Locations

    record = ledger.read()
    recipe = recorded_recipe(record, source=str(ledger.paths.ledger))
    profile = recorded_profile(record, source=str(ledger.paths.ledger))
    world = world_of(profile)
    # The same global-batch rule as submit, against the world size seen from here (e.g. fewer visible GPUs).
    accumulation, problem = batch_problem(recipe.train, world, Locations(Loc(f"run {record['run_id']} (here)")))
    if problem is not None:
        raise UserError(str(problem))
    model_config, _ = check_model_section(recipe.model.model_dump(mode="json"), Locations(Loc("recipe")))
    stage = ResolvedStage(1, Path(record.get("recipe_path") or "recipe.yaml"), recipe, record.get("recipe_sha256")
                          or recipe_sha256(recipe), accumulation, model_config)
    return Submission((stage,), profile, Path(record.get("profile_name") or "profile"), world,
                      ledger.paths.root.parent, record["run_id"])


def describe_launch(sub: Submission) -> str:
    """The launcher's own preview for ``--dry-run`` (e.g. the sbatch script of every stage)."""
    return get_launcher(sub.profile.launcher).describe(sub)
