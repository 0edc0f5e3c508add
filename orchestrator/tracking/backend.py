"""Apply tracking ops to MLflow. The only module of the tracker that talks to an MLflow client.

An op is a small JSON-able dict (``{"op": "metrics", ...}``) so the same op can be sent now, or
written to the spool and sent by a later process. Ops never carry the MLflow run id: they act on "the
MLflow run of this unigen run", which ``start`` creates or reattaches to and records in run.json. That
is what lets a first attempt that never reached MLflow be replayed, run creation included.

Every method may raise; ``is_transient`` tells the sender whether to keep the op for a retry
(server down, 5xx, database locked) or to drop it with a warning (MLflow rejected it as invalid).
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from unigen.orchestrator.config.recorded import recorded_recipe
from unigen.orchestrator.runs import RunLedger
from unigen.orchestrator.secrets import scrub
from unigen.orchestrator.tracking.parent import ensure_parent_run, get_or_create_experiment, update_parent_on_end
from unigen.orchestrator.tracking.relocate import rebase_artifacts
from unigen.orchestrator.tracking.store import display_uri, recorded_uri
from unigen.orchestrator.tracking.ui_view import (NOTE_TAG, checkpoint_model, register_export, stage1_note,
                                                 stage_run_name)

log = logging.getLogger("unigen.tracking")

# MLflow error codes that retrying cannot fix: the op itself is wrong (or its run is gone).
_PERMANENT = {"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "INVALID_STATE", "BAD_REQUEST",
              "MALFORMED_REQUEST", "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE_TRANSITION"}
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
REPLAYED_METRIC = "unigen.replayed"


class RunNotCreated(RuntimeError):
    """An op for a run whose MLflow run does not exist yet (its ``start`` op is still pending)."""


def is_transient(exc: BaseException) -> bool:
    """True when the op may succeed later (keep it); False when MLflow rejected it or the op itself
    is malformed (drop it: kept, it would block every op behind it forever)."""
    if isinstance(exc, RunNotCreated):
        return True
    if isinstance(exc, (ValueError, KeyError, TypeError)):  # an op we cannot even build a request from
        return False
    return getattr(exc, "error_code", None) not in _PERMANENT


def short_error(exc: BaseException, limit: int = 300) -> str:
    """One scrubbed line describing ``exc`` for a warning."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return scrub(text)[:limit]


class MlflowBackend:
    """Sends ops for the unigen run in ``run_dir`` to the store at ``tracking_uri``."""

    def __init__(self, run_dir: str | os.PathLike[str], tracking_uri: str):
        self.ledger = RunLedger(run_dir)
        self.run_dir = Path(run_dir)
        self.tracking_uri = tracking_uri
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._client = None
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "start": self._start, "params": self._params, "artifacts": self._artifacts, "inputs": self._inputs,
            "link_stage1": self._link_stage1, "export": self._export, "end": self._end,
            "tags": lambda op: self._set_tags(self._run(), op["tags"]),
            "metrics": lambda op: self.apply_metric_ops([op]),
            "text": lambda op: self.client.log_text(self._run(), op["text"], op["file"]),
        }

    @property
    def client(self):
        if self._client is None:
            from mlflow import MlflowClient  # heavy (1-3 s): only in the sender thread or a CLI command

            rebase_artifacts(self.tracking_uri)  # a copied runs root: its own artifacts, not the original's
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    # -- dispatch -------------------------------------------------------------------------------
    def apply(self, op: dict[str, Any]) -> None:
        handler = self._handlers.get(op.get("op", ""))
        if handler is None:
            raise ValueError(f"unknown tracking op {op.get('op')!r}")  # a bug or a newer spool format
        handler(op)

    def apply_metric_ops(self, ops: list[dict[str, Any]]) -> None:
        """Several ``metrics`` ops as few ``log_batch`` calls (a step's metrics, a backlog's steps)."""
        from mlflow.entities import Metric

        rows = [row for op in ops for row in op["metrics"]]
        run_id = self._run()
        metrics = [Metric(k, float(v), int(t), int(s)) for k, v, t, s in rows]
        self._log_batches(run_id, "metrics", metrics, MAX_METRICS_PER_BATCH)

    def _log_batches(self, run_id: str, kind: str, items: list[Any], size: int) -> None:
        """``items`` (metrics, params or tags) in ``log_batch`` calls of at most ``size`` each."""
        for i in range(0, len(items), size):
            self.client.log_batch(run_id, **{kind: items[i:i + size]})

    def _run(self) -> str:
        if self.run_id is None:
            known = (self.ledger.read().get("mlflow") or {}).get("run_id")
            if not known:
                raise RunNotCreated(f"no MLflow run recorded in {self.ledger.paths.ledger} yet")
            self.run_id = known
        return self.run_id

    # -- ops ------------------------------------------------------------------------------------
    def _start(self, op: dict[str, Any]) -> None:
        record = self.ledger.read()
        known = (record.get("mlflow") or {}).get("run_id") or op.get("hint_run_id")
        if known and self._reattach(known):
            self.run_id = known
            if op.get("tags"):
                self._set_tags(known, dict(op["tags"]))
        else:
            self.run_id = self._create(op, record)  # the tags go with the creation

    def _reattach(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            log.warning("MLflow run %s recorded for %s no longer exists in %s: starting a new one", run_id,
                        self.run_dir.name, display_uri(self.tracking_uri))
            return False
        if run.info.lifecycle_stage == "deleted":
            self.client.restore_run(run_id)
        if run.info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        self.experiment_id = run.info.experiment_id
        self._record(run_id=run_id, experiment_id=self.experiment_id)
        return True

    def _create(self, op: dict[str, Any], record: dict[str, Any]) -> str:
        experiment = op["experiment"]
        self.experiment_id = get_or_create_experiment(self.client, experiment, self.tracking_uri)
        parent_id = ensure_parent_run(self.client, self.experiment_id, self.ledger, record)
        tags = dict(op.get("tags") or {})
        if parent_id:
            # Tags, not mlflow.parentRunId: a child run is collapsed under its parent in the UI's runs
            # table, and the stage runs are the rows users look for (ui_view's docstring).
            tags.update({"unigen.submission": str(record.get("parent") or ""),
                         "unigen.submission.mlflow_run_id": parent_id})
        run = self.client.create_run(self.experiment_id, start_time=op.get("t"), tags=tags,
                                     run_name=op.get("run_name"))
        self._record(run_id=run.info.run_id, experiment_id=self.experiment_id, experiment_name=experiment,
                     parent_run_id=parent_id)
        log.info("MLflow run %s created for %s in %s", run.info.run_id, self.run_dir.name,
                 display_uri(self.tracking_uri))
        return run.info.run_id

    def _record(self, **fields: Any) -> None:
        fields["tracking_uri"] = recorded_uri(self.tracking_uri, self.run_dir)
        self.ledger.set_mlflow(**{k: v for k, v in fields.items() if v is not None})

    def _set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self._log_batches(run_id, "tags", [RunTag(k, str(v)) for k, v in tags.items()], MAX_PARAMS_PER_BATCH)

    def _params(self, op: dict[str, Any]) -> None:
        """Log the params the run lacks. Params are immutable in MLflow, so every attempt sends the
        full set and only missing keys are written: idempotent, and a later attempt never fails."""
        from mlflow.entities import Param

        run_id = self._run()
        existing = self.client.get_run(run_id).data.params
        wanted: dict[str, str] = op["params"]
        missing = [Param(k, v) for k, v in wanted.items() if k not in existing]
        changed = sorted(k for k, v in wanted.items() if k in existing and existing[k] != v)
        self._log_batches(run_id, "params", missing, MAX_PARAMS_PER_BATCH)
        if changed:
            log.warning("MLflow run %s: recipe params differ from the first attempt's and were kept as "
                        "logged: %s", run_id, ", ".join(changed[:20]))
            self._set_tags(run_id, {"unigen.params_changed": ",".join(changed)[:8000]})

    def _artifacts(self, op: dict[str, Any]) -> None:
        folder = self.ledger.paths.resolve(op["dir"])  # relative to the run folder (older spools: absolute)
        if folder is None or not folder.is_dir():  # removed before a backlog reached it: nothing to send, ever
            raise ValueError(f"artifact folder {folder} no longer exists")
        self.client.log_artifacts(self._run(), str(folder), op["path"])

    def _inputs(self, op: dict[str, Any]) -> None:
        """Each data source as an MLflow dataset input (skipping those the run already has)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        run_id = self._run()
        have = {(d.dataset.name, d.dataset.digest) for d in self.client.get_run(run_id).inputs.dataset_inputs}
        new = []
        for src in op["datasets"]:
            if (src["name"], src["digest"]) in have:
                continue
            dataset = Dataset(name=src["name"], digest=src["digest"], source_type=src["source_type"],
                              source=json.dumps({"uri": src["uri"]}),
                              profile=json.dumps({k: src.get(k) for k in ("format", "task", "weight")}))
            tags = [InputTag("mlflow.data.context", "training")] + [
                InputTag(f"unigen.{key}", str(src.get(key))) for key in ("task", "weight", "format")]
            new.append(DatasetInput(dataset, tags=tags))
        if new:
            self.client.log_inputs(run_id, datasets=new)

    def _link_stage1(self, op: dict[str, Any]) -> None:
        """Tag the stage-1 run and checkpoint this run started from. The stage-1 ids are read from
        its run.json at send time, so a stage 1 that tracked while MLflow was down still links."""
        tags = {}
        mlflow_id, uri = op.get("mlflow_run_id"), op.get("checkpoint_uri")
        stage1_dir = self._sibling(op.get("stage1_dir"))
        if stage1_dir and Path(stage1_dir, "run.json").is_file():
            stage1 = RunLedger(stage1_dir).read()
            mlflow_id = mlflow_id or (stage1.get("mlflow") or {}).get("run_id")
            tags["unigen.stage1.run_id"] = stage1["run_id"]
        if op.get("run_id"):
            tags["unigen.stage1.run_id"] = op["run_id"]
        if mlflow_id:
            tags["unigen.stage1.mlflow_run_id"] = mlflow_id
        if uri:
            tags["unigen.stage1.checkpoint_uri"] = uri
        if op.get("step") is not None:
            tags["unigen.stage1.checkpoint_step"] = str(op["step"])
        tags[NOTE_TAG] = self._stage1_note(mlflow_id, stage1_dir, tags.get("unigen.stage1.run_id"), uri,
                                           op.get("step"))
        if mlflow_id and op.get("step") is not None:
            self._checkpoint_input(mlflow_id, op["step"], uri)
        if stage1_dir and not mlflow_id:
            # Never block the queue on it: the unigen ids still link the runs (`unigen lineage`).
            log.warning("stage-1 run %s has no MLflow run recorded: linked by unigen run id only (run "
                        "`unigen runs --sync` for it, then the link can be read from run.json)", stage1_dir)
        self._set_tags(self._run(), tags)

    def _stage1_note(self, mlflow_id: str | None, stage1_dir: Path | None, run_id: str | None, uri: str | None,
                     step: Any) -> str:
        """The stage-2 run's description: a link to the stage-1 run's page (its name and experiment read
        from MLflow; the link is relative, so it works whatever the server's address)."""
        from mlflow.exceptions import MlflowException

        name, experiment_id = None, None
        if mlflow_id:
            try:
                info = self.client.get_run(mlflow_id).info
                name, experiment_id = info.run_name, info.experiment_id
            except MlflowException as e:
                if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                mlflow_id = None  # a stage-1 run deleted from the store: no link to a missing page
        if name is None and stage1_dir and Path(stage1_dir, "run.json").is_file():
            name = stage_run_name(RunLedger(stage1_dir).read())
        return stage1_note(stage1_name=name or run_id or "", experiment_id=experiment_id, mlflow_run_id=mlflow_id,
                           run_id=run_id, checkpoint_uri=uri, step=step)

    def _checkpoint_input(self, stage1_mlflow_id: str, step: Any, uri: str | None) -> None:
        """The stage-1 checkpoint as this run's model input (ui_view.checkpoint_model)."""
        from mlflow.entities import LoggedModelInput

        run_id = self._run()
        stage1 = self.client.get_run(stage1_mlflow_id).info
        model_id = checkpoint_model(self.client, stage1_run_id=stage1_mlflow_id, experiment_id=stage1.experiment_id,
                                    name=stage1.run_name or stage1_mlflow_id, step=step, uri=uri)
        have = {m.model_id for m in (self.client.get_run(run_id).inputs.model_inputs or [])}
        if model_id not in have:
            self.client.log_inputs(run_id, models=[LoggedModelInput(model_id)])

    def _export(self, op: dict[str, Any]) -> None:
        """Log the exported model folder as an MLflow model of this run and register it (ui_view)."""
        run_id = self._run()
        record = self.ledger.read()
        folder = self.ledger.paths.resolve(op["path"])
        experiment_id = self.experiment_id or self.client.get_run(run_id).info.experiment_id
        name = op.get("model_name") or recorded_recipe(record).name
        export = record.get("export")
        model_id, version = register_export(self.client, run_id=run_id, experiment_id=experiment_id,
                                            model_name=name, folder=folder, path_text=str(folder),
                                            unigen_run_id=record["run_id"],
                                            step=export.get("step") if isinstance(export, dict) else None)
        self._set_tags(run_id, {"unigen.export.model_id": model_id,
                                "unigen.export.registered": f"{name}/{version}"})

    def _sibling(self, name: str | None) -> Path | None:
        """A run folder next to this one under the runs root, by name (older spools: an absolute path,
        read as the same-named folder under this runs root when that exists, so a moved root stays whole)."""
        if not name:
            return None
        here = self.run_dir.parent / Path(name).name
        return here if (here / "run.json").is_file() or not Path(name).is_absolute() else Path(name)

    def _end(self, op: dict[str, Any]) -> None:
        run_id = self._run()
        self.client.set_terminated(run_id, status=op["status"], end_time=op.get("t") or int(time.time() * 1000))
        record = self.ledger.read()
        if parent_id := (record.get("mlflow") or {}).get("parent_run_id"):
            update_parent_on_end(self.client, parent_id, record, op["status"])
