"""Where a rank's progress goes: run.json, metrics.jsonl, the rank log and MLflow (rank 0 only).

- ``metrics.jsonl`` in the run folder gets every step (with its attempt number): the plain-text record
  that survives any tracking outage and that tests compare bit for bit across resumes.
- run.json's ``progress`` and ``checkpoints`` are updated at most every ``log_every`` steps (and on every
  checkpoint event), so ``unigen status`` and the ``--wait`` progress bar see fresh numbers.
- ``eval.jsonl`` gets every evaluation (val_loss per source, the sample images written under eval/step-<N>/,
  the suite rows), and run.json's ``eval`` the latest one (``suite_results.merge_latest_eval``).
- MLflow gets the same metrics through ``unigen.orchestrator.tracking.Tracker``, which buffers and
  spools when the server is down and never raises into training.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from unigen.orchestrator.config.recipe import TrainSection
from unigen.orchestrator.runs import RunLedger, now_iso
from unigen.orchestrator.runtime.distributed import RankContext

log = logging.getLogger("unigen.runtime")


class Reporter:
    def __init__(self, ledger: RunLedger, ctx: RankContext, *, train: TrainSection, ds_config: dict[str, Any],
                 lineage: dict[str, Any] | None):
        self.ledger, self.ctx = ledger, ctx
        self.ds_config, self.lineage = ds_config, lineage
        self.log_every, self.max_steps = train.log_every, train.max_steps
        self.tracker = None
        self.mlflow_run_id: str | None = None
        self._lock = threading.Lock()  # checkpoint events arrive from the uploader thread
        self._metrics_file = None
        self._last_progress = 0.0
        self._t_start = time.monotonic()

    @property
    def active(self) -> bool:
        return self.ctx.is_main

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, *, resumed_step: int | None, mlflow_run_id: str | None) -> None:
        if not self.active:
            return
        self._metrics_file = open(self.ledger.paths.root / "metrics.jsonl", "a", buffering=1)
        if self.lineage:
            self.ledger.set_init_from(self.lineage)
        from unigen.orchestrator.tracking import Tracker

        # open() logs the recipe, profile, DeepSpeed config, data inputs and the stage-1 link of run.json.
        self.tracker = Tracker.open(self.ledger, attempt=self.ctx.attempt, job_ids=[self.ctx.job_id] if self.ctx.job_id
                                    else [], mlflow_run_id=mlflow_run_id, deepspeed_config=self.ds_config)
        self.mlflow_run_id = self.tracker.mlflow_run_id
        if resumed_step is not None:
            self.tracker.note_resume(resumed_step)
        log.info("attempt %d started at step %s (mlflow run %s)", self.ctx.attempt, resumed_step or 0,
                 self.mlflow_run_id)

    def close(self, *, status: str) -> None:
        """``status``: completed, requeued (saved on a signal) or failed. A failed attempt that the
        launcher restarts reattaches to the MLflow run and sets it RUNNING again. Ranks other than 0 have
        nothing open."""
        if self.tracker is not None:
            self.tracker.close(status)
        if self._metrics_file is not None:
            self._metrics_file.close()

    # -- per step -------------------------------------------------------------------------------
    def step(self, step: int, metrics: dict[str, float]) -> None:
        if not self.active:
            return
        # wall_s: seconds since this attempt's reporter started, so per-step figures can be checked against
        # wall time (bench/runtime_vs_plain.py); not used for anything that must resume bit for bit.
        row = {"step": step, "attempt": self.ctx.attempt, **{k: float(v) for k, v in metrics.items()},
               "wall_s": round(time.monotonic() - self._t_start, 4)}
        self._metrics_file.write(json.dumps(row) + "\n")
        if self.tracker is not None:
            self.tracker.log_metrics(step, metrics)
        now = time.monotonic()
        if step % self.log_every == 0 or step == self.max_steps or now - self._last_progress > 30:
            self._last_progress = now
            log.info("step %d/%d loss %.5f lr %.3g grad_norm %.3g %.2f samples/s data_wait %.0f%%", step,
                     self.max_steps, metrics["loss"], metrics["lr"], metrics["grad_norm"],
                     metrics["samples_per_s"], 100 * metrics["data_wait_s"] / max(metrics["step_time_s"], 1e-9))
            self.ledger.set_progress(step=step, max_steps=self.max_steps, loss=float(metrics["loss"]),
                                     samples_per_s=float(metrics["samples_per_s"]))

    def evaluation(self, result) -> None:
        """An evaluation (``unigen.orchestrator.runtime.evaluation.EvalResult``): eval.jsonl, the rank log,
        run.json's ``eval``, and MLflow (metrics at its step, with eval/<suite>/<metric>[.baseline] of the
        suites; the step's folder of images and suite files as artifacts eval/step-<N>/)."""
        from unigen.orchestrator.runtime.suite_results import flat_metrics, headline, merge_latest_eval

        if not self.active:
            return
        row = {"step": result.step, "attempt": self.ctx.attempt, **result.metrics,
               "images": [image["file"] for image in result.images]}
        if result.suites:
            row["suites"] = result.suites
        with open(self.ledger.paths.root / "eval.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        losses = {k: v for k, v in result.metrics.items() if k.startswith("val_loss")}
        log.info("eval at step %d: %s%s%s (%.1f s)", result.step,
                 ", ".join(f"{k} {v:.5f}" for k, v in losses.items()) or "no held-out data",
                 f"; {len(result.images)} images in {result.folder}" if result.images else "",
                 f"; suites {', '.join(r['suite'] for r in result.suites)} ({headline(result.suites)})"
                 if result.suites else "", result.metrics.get("eval_s", 0.0))
        summary = {"step": result.step, "val_loss": result.metrics.get("val_loss"),
                   "images": self.ledger.paths.record_path(result.folder) if result.images else None, "at": now_iso()}
        if result.suites:
            summary["suites"] = result.suites
        self.ledger.set_eval(lambda recorded: merge_latest_eval(recorded, summary))
        if self.tracker is not None:
            self.tracker.log_metrics(result.step, {**result.metrics, **flat_metrics(result.suites)})
            if result.folder is not None:
                self.tracker.log_artifacts(result.folder, f"eval/{result.folder.name}")

    def preempted(self, step: int, reason: str | None) -> None:
        if self.active:
            log.warning("stopping at step %d after %s: checkpoint committed, exiting for requeue", step, reason)

    def finish_training(self, step: int) -> None:
        if self.active:
            self.ledger.set_progress(step=step, max_steps=self.max_steps)

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoint_saved(self, info) -> None:
        def change(r: dict[str, Any]) -> None:
            r["checkpoints"]["latest_local"] = {"step": info.step, "path": self.ledger.paths.record_path(info.path),
                                                "at": now_iso()}
            r["checkpoints"]["last_save_s"] = round(info.blocked_s, 3)

        with self._lock:
            self.ledger.update(change)

    def on_checkpoint_event(self, kind: str, payload: dict[str, Any]) -> None:
        """Called by CheckpointManager on rank 0 (from the uploader thread for upload events)."""
        if not self.active or kind not in ("durable", "durable_known"):
            return
        step, uri = payload.get("step"), payload.get("uri")
        commit_sha = _commit_sha256(self.ledger.paths.checkpoints, step)

        def change(r: dict[str, Any]) -> None:
            current = r["checkpoints"].get("latest_durable") or {}
            if step is not None and step >= (current.get("step") or -1):
                r["checkpoints"]["latest_durable"] = {"step": step, "uri": uri, "at": now_iso(),
                                                      "commit_sha256": commit_sha}

        with self._lock:
            self.ledger.update(change)
        if kind == "durable" and self.tracker is not None:
            self.tracker.log_checkpoint(step, uri, commit_sha)


def _commit_sha256(checkpoints: Path, step: int | None) -> str | None:
    """sha256 of a committed checkpoint's COMMIT.json: the identity lineage records point at."""
    if step is None:
        return None
    from unigen.orchestrator.checkpoint import COMMIT_NAME, step_dir_name

    path = checkpoints / step_dir_name(step) / COMMIT_NAME
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:  # retention removed it locally already; the remote copy is what counts
        return None
