"""Turn a committed DeepSpeed checkpoint into a ``UniGenPipeline.from_pretrained`` folder.

Used at the end of every run (rank 0, from the final checkpoint) and by ``unigen export RUN --out DIR``.
The weights are consolidated by ``consolidate.fp32_state_dict`` (DeepSpeed's zero_to_fp32 for ZeRO
shards, the whole module without ZeRO; no process group needed), loaded into a freshly built pipeline of
the run's recipe, and saved in the model's dtype, in the layout diffusers and transformers read
(``model_index.json``, ``backbone/``, ``transformer/``, ``vae/``, ... : unigen.model.export_layout; every part
whole, so each loads standalone). ``unigen_export.json`` says which run, step and checkpoint the folder came
from. The folder is written under a temporary name and renamed: a reader never sees half an export.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from unigen.orchestrator.checkpoint.layout import COMMIT_NAME
from unigen.orchestrator.config.recipe import Recipe
from unigen.orchestrator.errors import UserError
from unigen.orchestrator.runs import now_iso

log = logging.getLogger("unigen.runtime")
EXPORT_INFO = "unigen_export.json"


def export_checkpoint(recipe: Recipe, step_dir: Path, out_dir: Path, *, run_id: str | None,
                      average: bool = True) -> Path:
    """Write the pipeline of ``recipe`` (the run's, ``config.recorded.recorded_recipe``) with the weights of
    ``step_dir`` to ``out_dir`` (atomically): their average with ``train.ema_decay``, unless ``average`` is
    False."""
    from unigen.orchestrator.runtime import rng
    from unigen.orchestrator.runtime.build import build_pipeline
    from unigen.orchestrator.runtime.consolidate import fp32_state_dict
    from unigen.orchestrator.runtime.state import build_seed, frozen_parameter_names

    step_dir = Path(step_dir)
    commit_file = step_dir / COMMIT_NAME
    if not commit_file.is_file():
        raise UserError(f"{step_dir} is not a committed checkpoint (no {COMMIT_NAME})")
    commit = json.loads(commit_file.read_text())
    state = fp32_state_dict(step_dir, average=average)
    # Checkpoints hold no frozen parameter: those come from this build, which must equal the run's. Pretrained
    # parts load from their source; a preset's random ones (`tiny`) need the seed every rank built with.
    rng.seed_everything(build_seed(recipe.train))
    pipe = build_pipeline(recipe.model, init_weights=None)
    missing, unexpected = pipe.model.load_state_dict(state, strict=False)
    if unexpected:
        raise UserError(f"checkpoint {step_dir} does not match the run's model ({len(unexpected)} unexpected "
                        f"tensors, e.g. {unexpected[:3]})")
    trained_missing = sorted(set(missing) - frozen_parameter_names(pipe.model))
    if trained_missing:
        raise UserError(f"checkpoint {step_dir} lacks {len(trained_missing)} trained tensors of the run's model "
                        f"(e.g. {trained_missing[:3]}): export it with the recipe that wrote it")
    if missing:
        log.info("export: %d frozen tensors (not in checkpoints) come from the recipe's build", len(missing))
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    (tmp / EXPORT_INFO).write_text(json.dumps({
        "run_id": run_id, "step": commit["step"], "checkpoint": str(step_dir), "exported_at": now_iso(),
        "weights": "average" if average and recipe.train.ema_decay else "last"},
        indent=2))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.replace(out_dir)
    return out_dir
