"""Experiments and submission runs: a multi-stage submission has one MLflow run of its own beside its
stage runs (not above them: see ui_view's docstring for why stage runs are not nested under it).

The submitter calls ``start_parent_run`` once, before the stages run. When MLflow is down at that
moment it returns None and nothing is lost: each stage's ledger carries the submission id in its
``parent`` field, and the first stage that reaches MLflow finds the parent run by its
``unigen.submission`` tag, or creates it (``ensure_parent_run``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from unigen.orchestrator.config.recorded import recorded_profile, recorded_recipe
from unigen.orchestrator.runs import RunLedger, list_runs
from unigen.orchestrator.tracking.lineage import parse_init_from
from unigen.orchestrator.tracking.relocate import rebase_artifacts
from unigen.orchestrator.tracking.store import (
    artifact_location, display_uri, recorded_uri, resolve_experiment, resolve_tracking_uri, run_store_uri)
from unigen.orchestrator.tracking.ui_view import (EXPERIMENT_KIND_TAG, NOTE_TAG, TRAINING_KIND, filter_quote,
                                                 submission_run_name)

log = logging.getLogger("unigen.tracking")

PARENT_ROLE = "parent"


def get_or_create_experiment(client, name: str, tracking_uri: str) -> str:
    """The id of experiment ``name``, created (artifacts next to a sqlite store) or restored if needed."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            # The kind tag makes MLflow's UI open the experiment on its runs, not the GenAI traces page.
            return client.create_experiment(name, artifact_location=artifact_location(tracking_uri),
                                            tags={EXPERIMENT_KIND_TAG: TRAINING_KIND})
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":  # another process created it meanwhile
                raise
            found = client.get_experiment_by_name(name)
    if found.lifecycle_stage == "deleted":
        log.warning("MLflow experiment %r was deleted; restoring it to log into it", name)
        client.restore_experiment(found.experiment_id)
    if EXPERIMENT_KIND_TAG not in (found.tags or {}):  # made before unigen set it, or by hand
        client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
    return found.experiment_id


def _stage_run_ids(run_root: Path, submission: str) -> list[str]:
    """The submission's stages in run order: a stage initialised from a sibling comes after it
    (creation times tie within a second, so they alone cannot order them)."""
    siblings = {r["run_id"]: r for r in list_runs(run_root) if r.get("parent") == submission}

    def depth(run_id: str, seen: frozenset = frozenset()) -> int:
        ref = parse_init_from(siblings[run_id].get("init_from")).run
        parent = next((rid for rid in siblings if ref and rid.startswith(ref)), None)
        return 0 if parent is None or parent in seen else 1 + depth(parent, seen | {run_id})

    return sorted(siblings, key=lambda rid: (depth(rid), siblings[rid].get("created_at") or ""))


def _create_parent(client, experiment_id: str, submission: str, stages: Sequence[str]) -> str:
    note = (f"unigen submission `{submission}`: stages {', '.join(f'`{s}`' for s in stages)}, in order. "
            "Their runs are rows of this experiment tagged `unigen.submission`.")
    tags = {"unigen.role": PARENT_ROLE, "unigen.submission": submission, "unigen.stages": ",".join(stages),
            NOTE_TAG: note}
    return client.create_run(experiment_id, run_name=submission_run_name(submission), tags=tags).info.run_id


def ensure_parent_run(client, experiment_id: str, ledger: RunLedger, record: dict[str, Any]) -> str | None:
    """The submission's MLflow run of a stage: recorded in run.json, else found by submission tag, else
    created. None for a single-stage run (no ``parent`` in its ledger)."""
    known = (record.get("mlflow") or {}).get("parent_run_id")
    submission = record.get("parent")
    if known or not submission:
        return known
    query = f"tags.`unigen.submission` = '{filter_quote(submission)}' and tags.`unigen.role` = '{PARENT_ROLE}'"
    if found := client.search_runs([experiment_id], filter_string=query, max_results=1):
        return found[0].info.run_id
    return _create_parent(client, experiment_id, submission, _stage_run_ids(ledger.paths.root.parent, submission))


def update_parent_on_end(client, parent_id: str, record: dict[str, Any], status: str) -> None:
    """Reflect a stage's end on its parent: a failed or killed stage ends the parent the same way;
    the last stage (per the parent's ``unigen.stages`` tag) finishing ends it FINISHED."""
    from mlflow.entities import RunTag

    run_id = record["run_id"]
    client.log_batch(parent_id, tags=[RunTag(f"unigen.stage_status.{run_id}", status)])
    if status != "FINISHED":
        client.set_terminated(parent_id, status=status)
        return
    stages = client.get_run(parent_id).data.tags.get("unigen.stages", "").split(",")
    if stages and stages[-1] == run_id:
        client.set_terminated(parent_id, status="FINISHED")


def start_parent_run(submission_id: str, *, ledgers: Sequence[RunLedger], experiment: str | None = None,
                     tracking_uri: str | None = None) -> str | None:
    """Create the parent MLflow run of a multi-stage submission and record its id in every stage's
    run.json (``mlflow.parent_run_id``). Returns the id, or None with a warning when MLflow cannot
    be reached (the stages then create or find it themselves; see the module docstring). Never raises
    for MLflow trouble: a parent run is bookkeeping, not a reason to refuse a submission."""
    from unigen.orchestrator.tracking.sender import apply_http_timeouts

    if not ledgers:
        raise ValueError("start_parent_run needs the ledgers of the submission's stages")
    first, source = ledgers[0].read(), str(ledgers[0].paths.ledger)
    recipe, profile = recorded_recipe(first, source=source), recorded_profile(first, source=source)
    uri = tracking_uri or run_store_uri(first, ledgers[0].paths.root) or resolve_tracking_uri(
        None, recipe=recipe.tracking, profile=profile.tracking, run_root=ledgers[0].paths.root.parent)
    name = resolve_experiment(experiment, recipe.tracking)
    apply_http_timeouts()
    try:
        from mlflow import MlflowClient

        rebase_artifacts(uri)
        client = MlflowClient(tracking_uri=uri)
        experiment_id = get_or_create_experiment(client, name, uri)
        parent_id = _create_parent(client, experiment_id, submission_id, [ledger.run_id for ledger in ledgers])
    except Exception as e:  # noqa: BLE001 - any MLflow trouble: the stages retry it lazily
        from unigen.orchestrator.tracking.backend import short_error

        log.warning("MLflow at %s: could not create the parent run of %s (%s); the stages will create it "
                    "when MLflow answers", display_uri(uri), submission_id, short_error(e))
        return None
    for ledger in ledgers:
        recorded = (ledger.read().get("mlflow") or {}).get("tracking_uri")
        ledger.set_mlflow(parent_run_id=parent_id, experiment_id=experiment_id, experiment_name=name,
                          tracking_uri=recorded or recorded_uri(uri, ledger.paths.root))
    return parent_id
