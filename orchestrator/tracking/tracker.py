"""``Tracker``: what rank 0 of a training attempt calls to record the run in MLflow.

One MLflow run per unigen run. The first attempt creates it, every later attempt (restart, requeue)
reattaches to the id in run.json (or the one passed from checkpoint metadata) and records itself as
``unigen.attempt.<n>.*`` tags. Every call returns at once: ops go to a background sender, and to the
spool file while MLflow is down (see ``sender``). The tracker never raises into training for MLflow
trouble; it raises only for programming mistakes (a bad step type) and bad settings at ``open``.

Replayed steps. A resumed attempt restarts from its checkpoint's step, so steps an earlier attempt
logged after that checkpoint are computed and logged again. MLflow cannot delete metric points, so
both values stay in the history; every metric point of a replayed step also gets a
``unigen.replayed`` point (value = the attempt number) at that step, and ``note_resume`` writes the
range as tags ``unigen.attempt.<n>.resumed_from_step`` and ``unigen.attempt.<n>.replayed_steps``
("51-73"). A step that appears twice in a curve is therefore always one of those, never silent.

    tracker = Tracker.open(ledger, attempt=2, job_ids=["4242"])
    tracker.note_resume(50)
    tracker.log_metrics(51, {"loss": 0.42})
    tracker.log_checkpoint(100, "s3://b/run/checkpoints/step-100", commit_sha256)
    tracker.close("completed")
"""
from __future__ import annotations

import atexit
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from unigen.orchestrator.config.recorded import recorded_recipe
from unigen.orchestrator.runs import RunLedger, now_iso
from unigen.orchestrator.secrets import scrub
from unigen.orchestrator.tracking import payload
from unigen.orchestrator.tracking.backend import REPLAYED_METRIC
from unigen.orchestrator.tracking.lineage import stage1_link
from unigen.orchestrator.tracking.sender import Sender, open_sender
from unigen.orchestrator.tracking.state import StepState, add_checkpoint
from unigen.orchestrator.tracking.store import resolve_experiment
from unigen.orchestrator.tracking.ui_view import stage_run_name

log = logging.getLogger("unigen.tracking")

# Ledger / exit statuses -> MLflow's terminal statuses. Others (requeued, preempted, timeout, ...)
# leave the MLflow run RUNNING: the unigen run goes on in its next attempt.
_TERMINAL = {"completed": "FINISHED", "failed": "FAILED", "crashed": "FAILED", "cancelled": "KILLED"}
CLOSE_TIMEOUT_S = 30.0


def _now_ms() -> int:
    return int(time.time() * 1000)


class Tracker:
    """MLflow tracking for one attempt of one unigen run (rank 0 only). Build with ``open``."""

    def __init__(self, ledger: RunLedger, sender: Sender, *, attempt: int, experiment: str,
                 progress_step: int | None = None):
        self.ledger = ledger
        self.attempt = attempt
        self.experiment = experiment
        self._sender = sender
        self._steps = StepState(ledger.paths.root)
        # The highest step logged before this attempt: ours, or run.json's progress if it is ahead.
        self._earlier_max = max((s for s in (self._steps.max_step, progress_step) if s), default=None)
        self._closed = False
        self._warned: set[str] = set()
        self._pid = os.getpid()
        atexit.register(self._at_exit)

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    def open(cls, ledger: RunLedger, *, attempt: int, job_ids: Sequence[str] | str | None = (),
             tracking_uri: str | None = None, experiment: str | None = None, mlflow_run_id: str | None = None,
             deepspeed_config: Mapping[str, Any] | None = None, wait_s: float = 10.0) -> "Tracker":
        """Start tracking attempt ``attempt`` (1-based) of the run in ``ledger``.

        Creates the MLflow run on the first attempt, reattaches on later ones (to run.json's id, else
        ``mlflow_run_id`` from checkpoint metadata), and queues the run's tags, params, artifacts and
        inputs. Waits up to ``wait_s`` for MLflow to confirm the run so ``mlflow_run_id`` is known;
        with MLflow down it returns after that wait and keeps everything in the spool.
        """
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1 (1-based), got {attempt}")
        record = ledger.read()
        sender = open_sender(ledger, record, tracking_uri)
        name = resolve_experiment(experiment or (record.get("mlflow") or {}).get("experiment_name"),
                                  recorded_recipe(record, source=str(ledger.paths.ledger)).tracking)
        tracker = cls(ledger, sender, attempt=attempt, experiment=name,
                      progress_step=(record.get("progress") or {}).get("step"))
        sender.start()
        for op in tracker._opening_ops(record, _job_list(job_ids), mlflow_run_id, deepspeed_config):
            sender.submit(op)
        sender.started.wait(wait_s)
        return tracker

    def _opening_ops(self, record: dict[str, Any], job_ids: list[str], hint: str | None,
                     deepspeed_config: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        earlier_jobs = [str(a["job_id"]) for a in record.get("attempts", []) if a.get("job_id")]
        all_jobs = list(dict.fromkeys(earlier_jobs + job_ids))
        commit, dirty = payload.git_state()
        n = self.attempt
        tags = {
            "unigen.run_id": record["run_id"], "unigen.stage": record.get("stage") or "",
            "unigen.attempt": str(n), "unigen.job_ids": ",".join(all_jobs), "unigen.status": "running",
            "git.commit": commit, "git.dirty": dirty, "mlflow.source.git.commit": commit,
            "recipe.sha256": record.get("recipe_sha256") or "", "profile": record.get("profile_name") or "",
            f"unigen.attempt.{n}.job_ids": ",".join(job_ids), f"unigen.attempt.{n}.started_at": now_iso(),
            f"unigen.attempt.{n}.host": socket.gethostname(),
        }
        recipe = record.get("recipe") or {}
        ops: list[dict[str, Any]] = [
            {"op": "start", "attempt": n, "experiment": self.experiment, "run_name": stage_run_name(record),
             "hint_run_id": hint, "t": _now_ms(), "tags": {k: payload.tag_value(v) for k, v in tags.items()}},
            {"op": "params", "params": payload.flatten_params(recipe)},
            {"op": "text", "file": "unigen/recipe.yaml", "text": payload.dump_yaml(recipe)},
            {"op": "text", "file": "unigen/profile.yaml", "text": payload.dump_yaml(record.get("profile") or {})},
            {"op": "text", "file": f"unigen/environment/attempt-{n}.json",
             "text": payload.dump_json(payload.environment_report())},
        ]
        if deepspeed_config is not None:
            ops.append({"op": "text", "file": "unigen/deepspeed.json", "text": payload.dump_json(deepspeed_config)})
        sources = payload.data_sources(recorded_recipe(record, source=str(self.ledger.paths.ledger)).data)
        if sources:
            ops.append({"op": "inputs", "datasets": sources})
        if link := stage1_link(record, self.ledger.paths.root.resolve().parent):
            ops.append({"op": "link_stage1", **link})
        return ops

    # -- during training ------------------------------------------------------------------------
    @property
    def mlflow_run_id(self) -> str | None:
        """The MLflow run id once known (None while MLflow has not answered yet): store it in
        checkpoint metadata so a restore without run.json can still reattach."""
        if self._sender.backend.run_id:
            return self._sender.backend.run_id
        try:
            return (self.ledger.read().get("mlflow") or {}).get("run_id")
        except (OSError, ValueError):  # run.json being replaced or damaged: not training's problem
            return None

    @property
    def mlflow_down(self) -> bool:
        """True while tracking calls wait in the spool for MLflow to come back."""
        return self._sender.in_outage

    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Log ``metrics`` (name -> number) at ``step``. Returns at once; never raises for MLflow."""
        if self._closed:
            self._warn_once("closed", "Tracker.log_metrics after close(): ignored")
            return
        step = int(step)
        ts = _now_ms()
        rows = []
        for key, value in metrics.items():
            try:
                rows.append([payload.safe_key(key), float(value), ts, step])
            except (TypeError, ValueError):
                self._warn_once(f"metric:{key}", f"metric {key!r} is not a number ({type(value).__name__}); skipped")
        if not rows:
            return
        if self._earlier_max is not None and step <= self._earlier_max:
            rows.append([REPLAYED_METRIC, float(self.attempt), ts, step])
        self._steps.observe(step)  # first: state.json must know every step MLflow may hold
        self._sender.submit({"op": "metrics", "metrics": rows})

    def note_resume(self, resumed_step: int) -> None:
        """This attempt restored the checkpoint of ``resumed_step``: record it, and the range of
        steps an earlier attempt logged after it (they are logged again, marked replayed)."""
        tags = {f"unigen.attempt.{self.attempt}.resumed_from_step": str(int(resumed_step))}
        if self._earlier_max is not None and self._earlier_max > resumed_step:
            tags[f"unigen.attempt.{self.attempt}.replayed_steps"] = f"{int(resumed_step) + 1}-{self._earlier_max}"
        self._submit({"op": "tags", "tags": tags})

    def log_checkpoint(self, step: int, uri: str, commit_sha256: str) -> None:
        """Record a DURABLE checkpoint (its step, URI and the sha256 of its COMMIT.json): latest as
        ``unigen.checkpoint.durable.*`` tags, all of them in ``unigen/checkpoints.json``."""
        entry = {"step": int(step), "uri": scrub(str(uri)), "commit_sha256": str(commit_sha256),
                 "attempt": self.attempt, "logged_at": now_iso()}
        try:
            entries = add_checkpoint(self.ledger.paths.root, entry)
        except OSError as e:
            self._warn_once("ckpt-file", f"could not write tracking/checkpoints.json: {e}")
            entries = [entry]
        self._submit({"op": "tags", "tags": {"unigen.checkpoint.durable.step": str(entry["step"]),
                                             "unigen.checkpoint.durable.uri": entry["uri"],
                                             "unigen.checkpoint.durable.commit_sha256": entry["commit_sha256"]}})
        self._submit({"op": "metrics", "metrics": [["unigen.checkpoint.durable_step", float(step), _now_ms(),
                                                     int(step)]]})
        self._submit({"op": "text", "file": "unigen/checkpoints.json", "text": payload.dump_json(entries)})
        self._steps.save()

    def log_export(self, path: str | Path) -> None:
        """Record the exported model folder of this run, and log it as a registered MLflow model (a
        reference to the folder: the weights are not copied)."""
        where = scrub(str(Path(path).resolve()))
        self._submit({"op": "tags", "tags": {"unigen.export.path": where}})
        self._submit({"op": "export", "path": self.ledger.paths.record_path(where)})
        record_export_in_ledger(self.ledger, where)

    def log_artifacts(self, folder: str | Path, artifact_path: str) -> None:
        """Upload the files of a local ``folder`` (which must stay in place until sent, e.g. in the run folder)
        under ``artifact_path`` of the run, e.g. the sample images of an evaluation."""
        self._submit({"op": "artifacts", "dir": self.ledger.paths.record_path(folder), "path": artifact_path})

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything logged so far is in MLflow (False after ``timeout_s``)."""
        return self._sender.flush(timeout_s)

    # -- closing --------------------------------------------------------------------------------
    def close(self, status: str = "completed", *, timeout_s: float = CLOSE_TIMEOUT_S) -> int:
        """End this attempt. ``status`` is the run's status after it (completed, failed, cancelled:
        the MLflow run ends FINISHED/FAILED/KILLED; requeued and the like keep it RUNNING). Sends
        what it can within ``timeout_s``; returns how many calls are left in the spool for the next
        attempt or ``unigen runs --sync``."""
        if self._closed:
            return self._sender.spool.pending()
        n = self.attempt
        self._submit({"op": "tags", "tags": {f"unigen.attempt.{n}.ended_at": now_iso(),
                                             f"unigen.attempt.{n}.exit": status, "unigen.status": status}})
        if status in _TERMINAL:
            self._submit({"op": "end", "status": _TERMINAL[status], "t": _now_ms()})
        self._closed = True
        self._steps.save()
        left = self._sender.close(timeout_s)
        atexit.unregister(self._at_exit)
        if left:
            log.warning("%d tracking calls of %s wait in %s: the next attempt sends them, or run `unigen runs "
                        "--sync`", left, self.ledger.paths.root.name, self._sender.spool.path)
        return left

    # -- helpers --------------------------------------------------------------------------------
    def _submit(self, op: dict[str, Any]) -> None:
        if self._closed:
            self._warn_once("closed", f"Tracker call ({op['op']}) after close(): ignored")
            return
        self._sender.submit(op)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", scrub(message))

    def _at_exit(self) -> None:
        # The process ends without close() (a crash path): keep what is queued, do not wait long.
        # A forked child (a data worker) has a copy of the queue but no sender: it must not spool it.
        if not self._closed and os.getpid() == self._pid:
            self._closed = True
            self._steps.save()
            self._sender.close(2.0)


def record_export_in_ledger(ledger: RunLedger, path: str) -> None:
    """Fill run.json's ``export`` when nothing recorded it yet (``unigen export`` may own it)."""
    def change(r: dict[str, Any]) -> None:
        if not r.get("export"):
            r["export"] = {"path": ledger.paths.record_path(path), "recorded_at": now_iso()}

    try:
        ledger.update(change)
    except OSError as e:  # never into training
        log.warning("could not record the export in %s: %s", ledger.paths.ledger, scrub(str(e)))


def _job_list(job_ids: Sequence[str] | str | None) -> list[str]:
    if job_ids is None:
        return []
    if isinstance(job_ids, (str, int)):
        return [str(job_ids)]
    return [str(j) for j in job_ids if j not in (None, "")]
