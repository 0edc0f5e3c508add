"""Run ledgers and a simulated training runtime for the tracking tests (unit and integration)."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from unigen.orchestrator.config.profile import Profile
from unigen.orchestrator.config.recipe import Recipe
from unigen.orchestrator.runs import RunLedger
from unigen.orchestrator.tracking import Tracker

SOURCES = [
    {"uri": "s3://unigen-data/cc3m/{00000..00009}.tar", "format": "webdataset", "task": "t2i", "weight": 2.0},
    {"uri": "s3://unigen-data/edits/train.jsonl", "format": "jsonl", "task": "edit", "weight": 1.0,
     "name": "magicbrush"},
]


def make_recipe(name: str, stage: str, *, max_steps: int, tracking: dict[str, Any] | None = None,
                sources: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    recipe = {
        "name": name, "stage": stage, "model": {"preset": "tiny"},
        "data": {"sources": sources or SOURCES, "image_size": 64},
        "train": {"max_steps": max_steps, "global_batch_size": 8, "micro_batch_size": 2, "lr": 1.0e-4,
                  "warmup_steps": 2, "seed": 0},
        "deepspeed": {"zero_stage": 3},
        "checkpoint": {"every": 10, "keep_last": 3, "uri": f"s3://unigen-ckpt/{name}"},
        "tracking": tracking or {"experiment": "unigen-tests"},
    }
    recipe.update(extra)
    return recipe


def recipe_model(name: str, stage: str, *, max_steps: int, **kw: Any) -> Recipe:
    """``make_recipe`` as the typed ``Recipe`` that ``RunLedger.create`` records."""
    return Recipe.model_validate(make_recipe(name, stage, max_steps=max_steps, **kw))


def make_run(run_root: Path, run_id: str, recipe: dict[str, Any], *, profile: dict[str, Any] | None = None,
             init_from: Any = None, parent: str | None = None) -> RunLedger:
    """A queued run of ``recipe``; ``init_from`` (any form run.json has held: a ``run:<id>`` text, or the
    lineage the runtime records once it started) replaces what the recipe's own ``init_from`` recorded."""
    text = repr(recipe).encode()
    ledger = RunLedger.create(run_root, run_id=run_id, recipe=Recipe.model_validate(recipe),
                              recipe_path=f"recipes/{recipe['name']}.yaml",
                              recipe_sha256=hashlib.sha256(text).hexdigest(),
                              profile=Profile.model_validate(profile or {"name": "local", "launcher": "local"}),
                              parent=parent)
    if init_from is not None:
        ledger.set_init_from(init_from)
    return ledger


def loss_at(step: int) -> float:
    """The loss a deterministic run logs at ``step`` (a resumed attempt recomputes the same value)."""
    return round(3.0 / (1 + 0.1 * step), 6)


def ckpt_uri(recipe: dict[str, Any], step: int) -> str:
    return f"{recipe['checkpoint']['uri']}/checkpoints/step-{step}"


def commit_sha(run_id: str, step: int) -> str:
    return hashlib.sha256(f"{run_id}/COMMIT/{step}".encode()).hexdigest()


def run_attempt(ledger: RunLedger, *, attempt: int, job_id: str, steps: range, resumed_from: int | None,
                checkpoint_steps: tuple[int, ...], end_status: str, tracking_uri: str | None = None,
                **open_kw: Any) -> Tracker:
    """What the runtime does on rank 0 for one attempt: open (reattach), note the resume, log a loss per
    step, log durable checkpoints, close. The ledger side (start/end attempt, progress) is what the
    launcher and runtime write."""
    record = ledger.read()
    recipe = record["recipe"]
    ledger.start_attempt(job_id=job_id, nodes="localhost")
    tracker = Tracker.open(ledger, attempt=attempt, job_ids=[job_id], tracking_uri=tracking_uri, **open_kw)
    if resumed_from is not None:
        tracker.note_resume(resumed_from)
    for step in steps:
        tracker.log_metrics(step, {"loss": loss_at(step), "lr": 1e-4})
        if step in checkpoint_steps:
            tracker.log_checkpoint(step, ckpt_uri(recipe, step), commit_sha(record["run_id"], step))
    ledger.set_progress(step=steps[-1], loss=loss_at(steps[-1]))
    tracker.close(end_status)
    exit_reason = {"completed": "completed", "requeued": "preempted", "failed": "crashed"}[end_status]
    ledger.end_attempt(exit_reason=exit_reason, exit_code=0 if end_status == "completed" else 75,
                       status=end_status)
    return tracker
