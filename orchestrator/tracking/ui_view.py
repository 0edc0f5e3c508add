"""What the MLflow UI shows of unigen runs: row names, the stage-1 link in a stage-2 run's description,
the experiment kind, and the exported model as a registered MLflow model.

Choices, each made for what MLflow 3's UI displays by default:

- Stage runs are top-level runs, not children of the submission run. The runs table collapses child runs
  under their parent, so nested stage runs were hidden behind one row. The submission stays a run of its
  own (named ``submission-<id>``, a row beside its stages) and every stage run carries the
  ``unigen.submission`` tag: the runs page's "group by" tag shows a submission's stages together.
- Rows are named ``<stage>-<unigen run id>`` (or the recipe's ``tracking.run_name``): the stage is the
  first word read, and the unigen id is what ``unigen status``/``lineage`` print.
- A stage-2 run's description (``mlflow.note.content``, markdown) links its stage-1 run page, so the
  lineage is one click, not a tag value to copy.
- The experiment gets ``mlflow.experimentKind = custom_model_development`` (what MLflow's UI reads where
  its GenAI/ML workflow switch is off). Where the switch is on (OSS MLflow 3.17: the UI's own
  ``workflowType`` setting, kept in the browser, default "genai"), a link opens on training runs only with
  ``?workflowType=machine_learning``: ``runs_page_url`` adds it.
- The stage-1 checkpoint a stage-2 run started from is a logged model of the stage-1 run (no artifacts),
  listed as the stage-2 run's model input beside its dataset inputs.
- The export is an MLflow logged model (``source_run_id`` = the run that exported it) registered under the
  recipe's name. Its weights stay in the run folder: the model's artifacts are one small
  ``unigen-export.json`` (the folder's path and file list), never a copy of the weights.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
NOTE_TAG = "mlflow.note.content"
ML_WORKFLOW_QUERY = "workflowType=machine_learning"
EXPORT_MODEL_TYPE = "unigen-export"
CHECKPOINT_MODEL_TYPE = "unigen-checkpoint"
EXPORT_MANIFEST = "unigen-export.json"


def stage_run_name(record: Mapping[str, Any]) -> str:
    """The MLflow run name of a stage run: the recipe's ``tracking.run_name``, else ``<stage>-<run id>``."""
    from unigen.orchestrator.config.recorded import recorded_recipe

    if chosen := recorded_recipe(record).tracking.run_name:
        return str(chosen)
    return f"{record.get('stage') or 'run'}-{record['run_id']}"


def submission_run_name(submission: str) -> str:
    return f"submission-{submission}"


def run_page_fragment(experiment_id: str, mlflow_run_id: str) -> str:
    """The UI route of one run, relative to the server (a link inside the UI). It names the ML workflow
    too: the UI keeps that setting only from its own switch, and a plain link opens the run in the GenAI
    layout (MLflow 3.17)."""
    return f"#/experiments/{quote(str(experiment_id))}/runs/{quote(str(mlflow_run_id))}?{ML_WORKFLOW_QUERY}"


def runs_page_url(server: str, experiment_id: str | None) -> str:
    """The runs table of an experiment, opened on training runs (see the module docstring); the server
    root when no experiment is known yet."""
    base = server.rstrip("/")
    if not experiment_id:
        return f"{base}/"
    return f"{base}/#/experiments/{quote(str(experiment_id))}/runs?{ML_WORKFLOW_QUERY}"


def _md(text: str) -> str:
    """Text safe inside a markdown link label."""
    return "".join("\\" + c if c in "[]()*_`\\" else c for c in str(text))


def stage1_note(*, stage1_name: str, experiment_id: str | None, mlflow_run_id: str | None, run_id: str | None,
                checkpoint_uri: str | None, step: int | None) -> str:
    """The markdown description of a stage-2 run: where its weights came from."""
    label = _md(stage1_name or run_id or mlflow_run_id or "stage 1")
    first = (f"[{label}]({run_page_fragment(experiment_id, mlflow_run_id)})" if experiment_id and mlflow_run_id
             else f"{label} (no MLflow run yet)")
    lines = [f"**Started from stage 1:** {first}"]
    if run_id:
        lines.append(f"- unigen run: `{run_id}`")
    if step is not None or checkpoint_uri:
        where = f" `{checkpoint_uri}`" if checkpoint_uri else ""
        lines.append(f"- checkpoint: step {step if step is not None else '?'}{where}")
    lines.append("- `unigen lineage <run>` prints the whole chain")
    return "\n".join(lines)


def export_manifest(folder: Path | None, path_text: str) -> dict[str, Any]:
    """What the logged model records of an export folder: its path and files (name, bytes), not the bytes."""
    files = []
    if folder is not None and folder.is_dir():
        files = [{"file": p.relative_to(folder).as_posix(), "bytes": p.stat().st_size}
                 for p in sorted(folder.rglob("*")) if p.is_file()]
    return {"path": path_text, "files": files, "total_bytes": sum(f["bytes"] for f in files),
            "note": "the weights stay in the unigen run folder; this model records where they are"}


def register_export(client, *, run_id: str, experiment_id: str, model_name: str, folder: Path | None,
                    path_text: str, unigen_run_id: str, step: int | None = None) -> tuple[str, str]:
    """The export as a READY logged model of ``run_id`` and a version of registered model ``model_name``
    (created when missing). Idempotent: a model already logged for this run and path is reused, and so is
    its version. Returns (logged model id, version)."""
    from mlflow.exceptions import MlflowException

    query = f"source_run_id = '{run_id}'"
    model = next((m for m in client.search_logged_models([experiment_id], filter_string=query)
                  if (m.tags or {}).get("unigen.export.path") == path_text), None)
    if model is None:
        model = client.create_logged_model(
            experiment_id, name=model_name, source_run_id=run_id, model_type=EXPORT_MODEL_TYPE,
            tags={"unigen.export.path": path_text, "unigen.run_id": unigen_run_id})
        with tempfile.TemporaryDirectory(prefix="unigen-export-") as tmp:
            Path(tmp, EXPORT_MANIFEST).write_text(json.dumps(export_manifest(folder, path_text), indent=2) + "\n")
            client.log_model_artifacts(model.model_id, tmp)
        client.finalize_logged_model(model.model_id, "READY")
        _as_output(client, run_id, model.model_id, step)
    try:
        client.create_registered_model(model_name, description="unigen exports; each version names its run")
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    for version in client.search_model_versions(f"name = '{filter_quote(model_name)}' and run_id = '{run_id}'"):
        if version.source == model.artifact_location:  # (a sqlite registry does not keep model_id)
            return model.model_id, str(version.version)
    # The source is the logged model's artifact location, not ``models:/<id>``: a local sqlite registry
    # resolves ``models:/`` through the process-wide tracking URI, not this client's (MLflow 3.17).
    version = client.create_model_version(
        model_name, source=model.artifact_location, run_id=run_id, model_id=model.model_id,
        tags={"unigen.export.path": path_text, "unigen.run_id": unigen_run_id, "unigen.model_id": model.model_id},
        description=f"Exported by unigen run {unigen_run_id}; files in {path_text}")
    return model.model_id, str(version.version)


def checkpoint_model(client, *, stage1_run_id: str, experiment_id: str, name: str, step: Any,
                     uri: str | None) -> str:
    """A READY logged model of the stage-1 run standing for the checkpoint stage 2 started from (no
    artifacts: the checkpoint stays where it is), so stage 2 can list it as its model input. Reused when
    one for the same run, step and URI exists. Returns its id."""
    query = f"source_run_id = '{stage1_run_id}'"
    want = {"unigen.checkpoint.step": str(step), "unigen.checkpoint.uri": uri or ""}
    for model in client.search_logged_models([experiment_id], filter_string=query):
        if all((model.tags or {}).get(k) == v for k, v in want.items()):
            return model.model_id
    model = client.create_logged_model(experiment_id, name=f"{name}-step-{step}", source_run_id=stage1_run_id,
                                       model_type=CHECKPOINT_MODEL_TYPE, tags=want)
    client.finalize_logged_model(model.model_id, "READY")
    _as_output(client, stage1_run_id, model.model_id, step)
    return model.model_id


def _as_output(client, run_id: str, model_id: str, step: Any) -> None:
    """List the model on its run's page ("Logged models" shows the run's model outputs)."""
    from mlflow.entities import LoggedModelOutput

    client.log_outputs(run_id, [LoggedModelOutput(model_id, int(step or 0))])


def filter_quote(text: str) -> str:
    """``text`` escaped for a quoted value in an MLflow search filter (``tags.x = '...'``)."""
    return str(text).replace("\\", "\\\\").replace("'", "\\'")
