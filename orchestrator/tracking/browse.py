"""Rows for ``unigen runs``: run.json data, completed from MLflow when it answers quickly.

The ledger is the source of truth (status, step, durable checkpoint, MLflow id, the latest evaluation and its
suite figure, ``suite_results.headline``). MLflow only adds
the newest logged ``loss`` and ``val_loss`` when it is reachable within a few seconds; an unreachable store costs one
short timeout per store, never one per run, and is reported in a note under the table.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from unigen.orchestrator.runs import list_runs
from unigen.orchestrator.runtime.suite_results import headline
from unigen.orchestrator.tracking.lineage import latest_durable
from unigen.orchestrator.tracking.spool import Spool, spool_path
from unigen.orchestrator.tracking.relocate import rebase_artifacts
from unigen.orchestrator.tracking.store import display_uri, run_store_uri, sqlite_path

LOSS_KEY, VAL_LOSS_KEY = "loss", "val_loss"
CLI_HTTP_TIMEOUT_S = 3


@dataclass
class RunRow:
    """One line of ``unigen runs``."""

    run: str
    stage: str
    status: str
    step: str
    loss: str
    val_loss: str
    suite: str
    """The latest evaluation suite figure (``t2i 0.62``), from run.json's ``eval``."""
    durable: str
    mlflow: str
    record: dict[str, Any] = field(repr=False, default_factory=dict)
    run_dir: Path | None = field(repr=False, default=None)
    spooled: int = 0


def experiment_of(record: dict[str, Any]) -> str:
    """The MLflow experiment a run logs to (as recorded, else as its recipe names it)."""
    from unigen.orchestrator.config.recorded import recorded_recipe

    return (record.get("mlflow") or {}).get("experiment_name") or recorded_recipe(record).tracking.experiment


def _keep(record: dict[str, Any], experiment: str | None, stage: str | None, status: str | None) -> bool:
    if stage and record.get("stage") != stage:
        return False
    if status and record.get("status") != status:
        return False
    if experiment:
        exp_id = str((record.get("mlflow") or {}).get("experiment_id") or "")
        if experiment not in (experiment_of(record), exp_id):
            return False
    return True


def _fmt_loss(value: Any) -> str:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return "-"


def _row(record: dict[str, Any], run_dir: Path) -> RunRow:
    progress = record.get("progress") or {}
    step, max_steps = progress.get("step"), progress.get("max_steps")
    step_text = "-" if step is None else (f"{step}/{max_steps}" if max_steps else str(step))
    durable_text = "-"
    if durable := latest_durable(record, run_dir):
        durable_text = f"{durable['step']} {durable['uri']}" if durable.get("uri") else str(durable["step"])
    spooled = Spool(spool_path(run_dir)).pending()
    mlflow_id = (record.get("mlflow") or {}).get("run_id") or ("(pending)" if spooled else "-")
    return RunRow(run=record["run_id"], stage=record.get("stage") or "-", status=record.get("status") or "-",
                  step=step_text, loss=_fmt_loss(progress.get("loss")),
                  val_loss=_fmt_loss((record.get("eval") or {}).get("val_loss")),
                  suite=headline((record.get("eval") or {}).get("suites")) or "-", durable=durable_text,
                  mlflow=mlflow_id, record=record, run_dir=run_dir, spooled=spooled)


def collect_rows(run_root: str | os.PathLike[str], *, experiment: str | None = None, stage: str | None = None,
                 status: str | None = None, query_mlflow: bool = True) -> tuple[list[RunRow], list[str]]:
    """The rows of ``unigen runs`` (oldest first) and notes to print under the table."""
    root = Path(run_root)
    rows = [_row(r, root / r["run_id"]) for r in list_runs(root) if _keep(r, experiment, stage, status)]
    notes = _complete_from_mlflow(rows) if query_mlflow else []
    waiting = [r for r in rows if r.spooled]
    if waiting:
        notes.append(f"{sum(r.spooled for r in waiting)} tracking call(s) of {len(waiting)} run(s) wait in their "
                     "spool (MLflow was down): `unigen runs --sync` sends them")
    return rows, notes


def _by_store(rows: Iterable[RunRow]) -> dict[str, list[RunRow]]:
    stores: dict[str, list[RunRow]] = {}
    for row in rows:
        mlflow_rec = row.record.get("mlflow") or {}
        uri = run_store_uri(row.record, row.run_dir) if row.run_dir is not None else mlflow_rec.get("tracking_uri")
        if not mlflow_rec.get("run_id") or not uri or "***" in uri:
            continue
        db = sqlite_path(uri)
        if db is not None and not db.exists():
            continue  # never create an empty database just by looking
        stores.setdefault(uri, []).append(row)
    return stores


def _complete_from_mlflow(rows: list[RunRow]) -> list[str]:
    stores = _by_store(rows)
    if not stores:
        return []
    from unigen.orchestrator.tracking.backend import short_error
    from unigen.orchestrator.tracking.sender import apply_http_timeouts

    apply_http_timeouts(timeout_s=CLI_HTTP_TIMEOUT_S)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    notes = []
    for uri, store_rows in stores.items():
        rebase_artifacts(uri)
        client = MlflowClient(tracking_uri=uri)
        for row in store_rows:
            try:
                run = client.get_run(row.record["mlflow"]["run_id"])
            except MlflowException as e:
                if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                    row.mlflow += " (missing in MLflow)"
                    continue
                notes.append(f"MLflow at {display_uri(uri)} not reachable ({short_error(e, 120)}): "
                             "columns from run.json only")
                break
            except Exception as e:  # noqa: BLE001 - a broken local store: say so, show the ledger data
                notes.append(f"MLflow store {display_uri(uri)} unreadable ({short_error(e, 120)}): "
                             "columns from run.json only")
                break
            if LOSS_KEY in run.data.metrics:
                row.loss = _fmt_loss(run.data.metrics[LOSS_KEY])
            if VAL_LOSS_KEY in run.data.metrics:
                row.val_loss = _fmt_loss(run.data.metrics[VAL_LOSS_KEY])
    return notes
