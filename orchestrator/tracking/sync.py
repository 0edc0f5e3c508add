"""Tracking work outside a training attempt: replay a run's spool (``unigen runs --sync``), record an
export made after training (``unigen export``) and an evaluation made after it (``unigen eval``)."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from unigen.orchestrator.runs import RunLedger
from unigen.orchestrator.secrets import scrub
from unigen.orchestrator.tracking.backend import MlflowBackend, short_error
from unigen.orchestrator.tracking.payload import safe_key
from unigen.orchestrator.tracking.sender import apply_http_timeouts, open_sender, replay_spool
from unigen.orchestrator.tracking.spool import Spool, spool_path
from unigen.orchestrator.tracking.store import run_tracking_uri
from unigen.orchestrator.tracking.tracker import record_export_in_ledger

log = logging.getLogger("unigen.tracking")


@dataclass(frozen=True)
class SyncResult:
    """What a spool replay did: ops sent, dropped (MLflow rejected them), left, and why it stopped."""

    run_id: str
    sent: int
    dropped: int
    left: int
    error: str | None = None


def sync_run(run_dir: str | os.PathLike[str], *, tracking_uri: str | None = None) -> SyncResult:
    """Send a run's spooled tracking calls to MLflow now, in order (the store is the one in run.json
    unless ``tracking_uri`` is given). Stops at the first transient failure and keeps the rest."""
    ledger = RunLedger(run_dir)
    record = ledger.read()
    uri = run_tracking_uri(record, tracking_uri, Path(run_dir).resolve().parent, run_dir)
    apply_http_timeouts()
    dropped: list[int] = []

    def on_drop(group, error) -> None:
        dropped.append(len(group))
        log.warning("MLflow rejected a spooled %s call of %s; dropped: %s", group[0].get("op"), record["run_id"],
                    short_error(error))

    sent, left, error = replay_spool(MlflowBackend(run_dir, uri), Spool(spool_path(run_dir)), on_drop)
    return SyncResult(run_id=record["run_id"], sent=sent - sum(dropped), dropped=sum(dropped), left=left,
                      error=short_error(error) if error else None)


def record_export(ledger: RunLedger, path: str | os.PathLike[str], *, tracking_uri: str | None = None,
                  timeout_s: float = 20.0) -> int:
    """Record an exported model folder on the run (``unigen.export.path`` tag, run.json ``export``, and
    a logged and registered MLflow model that points at the folder) after training ended. Returns how many
    calls were left in the spool (0 when MLflow took it)."""
    record = ledger.read()
    where = str(Path(path).resolve())
    record_export_in_ledger(ledger, where)
    sender = open_sender(ledger, record, tracking_uri)
    sender.start()
    sender.submit({"op": "tags", "tags": {"unigen.export.path": where}})
    sender.submit({"op": "export", "path": ledger.paths.record_path(where)})  # a registered MLflow model
    return sender.close(timeout_s)


def record_evaluation(ledger: RunLedger, step: int, metrics: Mapping[str, float], *,
                      texts: Mapping[str, str] | None = None,
                      folders: Mapping[str, str | os.PathLike[str]] | None = None, tracking_uri: str | None = None,
                      timeout_s: float = 20.0) -> int:
    """Log an evaluation made after training into the run's MLflow run (the one run.json records):
    ``metrics`` at ``step``, ``texts`` (artifact file -> text) and ``folders`` (artifact path -> local folder,
    which must stay in place until sent). Never raises for MLflow: what it cannot send now waits in the run's
    spool (``unigen runs --sync``). Returns how many calls were left there (0 when MLflow took everything)."""
    sender = open_sender(ledger, ledger.read(), tracking_uri)
    sender.start()
    now = int(time.time() * 1000)
    rows = [[safe_key(k), float(v), now, int(step)] for k, v in metrics.items()]
    if rows:
        sender.submit({"op": "metrics", "metrics": rows})
    for artifact_file, text in (texts or {}).items():
        sender.submit({"op": "text", "file": artifact_file, "text": scrub(text)})
    for artifact_path, folder in (folders or {}).items():
        sender.submit({"op": "artifacts", "dir": ledger.paths.record_path(folder), "path": artifact_path})
    return sender.close(timeout_s)
