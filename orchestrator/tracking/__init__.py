"""MLflow tracking and lineage for unigen runs.

- ``Tracker`` (tracker.py): rank 0 of each attempt; one MLflow run per unigen run across attempts.
- ``resolve_tracking_uri`` (store.py): which store a run uses.
- ``start_parent_run`` (parent.py): the parent run of a multi-stage submission.
- ``sync_run`` / ``record_export`` / ``record_evaluation`` (sync.py): replay a run's spool; record an export
  or an evaluation (``unigen eval``) after training.
- ``build_chain`` (lineage.py): the lineage chain from run.json files, for ``unigen lineage``.

Nothing here imports mlflow at module import: it loads (1-3 s) in the sender thread or inside the
CLI command that needs it.
"""
from unigen.orchestrator.tracking.lineage import build_chain, parse_init_from
from unigen.orchestrator.tracking.parent import start_parent_run
from unigen.orchestrator.tracking.store import default_store_uri, display_uri, resolve_tracking_uri
from unigen.orchestrator.tracking.sync import record_evaluation, record_export, sync_run
from unigen.orchestrator.tracking.tracker import Tracker

__all__ = ["Tracker", "build_chain", "default_store_uri", "display_uri", "parse_init_from", "record_evaluation",
           "record_export", "resolve_tracking_uri", "start_parent_run", "sync_run"]
