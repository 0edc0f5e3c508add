"""Build the model, optimizer and DeepSpeed engine a recipe asks for (per rank)."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from unigen.orchestrator.errors import UserError

log = logging.getLogger("unigen.runtime")

# Recipe `model:` keys that are ours, not UniGenConfig overrides.
_MODEL_KEYS = ("preset", "pretrained")


def model_overrides(model_section: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in model_section.items() if k not in _MODEL_KEYS and v is not None}


def build_pipeline(recipe: dict[str, Any], init_weights: Path | None):
    """The UniGenPipeline of the recipe's model section, with stage-1 weights loaded when given.

    All ranks call this with the same seed set beforehand: ZeRO-3 partitions each rank's own copy of
    the parameters, so every rank must build identical ones.
    """
    from unigen.model import UniGenPipeline

    section = dict(recipe["model"])
    overrides = model_overrides(section)
    if section.get("pretrained"):
        pipe = UniGenPipeline.from_pretrained(section["pretrained"], **overrides)
    else:
        pipe = UniGenPipeline.from_preset(section["preset"], **overrides)
    if init_weights is not None:
        load_init_weights(pipe.model, init_weights)
    return pipe


def load_init_weights(model, state_path: Path) -> None:
    """Load a consolidated state dict (the previous stage's weights) into ``model``.

    Frozen components that the previous stage saved identically are loaded too; a key the model does
    not have, or a missing trainable key, is an error (a stage-2 recipe whose model does not match
    stage 1's).
    """
    import torch

    from unigen.model.components import widen_dit_input_state

    state = widen_dit_input_state(torch.load(state_path, map_location="cpu", weights_only=True), model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    trainable_missing = [k for k in missing if _is_trainable(model, k)]
    if unexpected or trainable_missing:
        raise UserError(
            f"init_from weights {state_path} do not match this recipe's model: "
            f"{len(trainable_missing)} trainable tensors missing (e.g. {trainable_missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}); stage 2 must use stage 1's model settings")
    log.info("loaded init weights from %s (%d tensors)", state_path, len(state))


def _is_trainable(model, key: str) -> bool:
    params = dict(model.named_parameters())
    return key in params and params[key].requires_grad


def build_optimizer(model, train: dict[str, Any], *, device=None):
    """torch AdamW over the trainable parameters, no weight decay on norms, biases and queries.

    On a CUDA ``device`` it is torch's fused AdamW: one kernel launch for every tensor of a group instead
    of a few per tensor (the MetaQuery baseline uses it too). Elsewhere torch picks its default (foreach)
    implementation; the fused CPU kernel rounds differently and buys nothing at smoke sizes."""
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name or name.endswith("queries") else decay).append(p)
    if not decay and not no_decay:
        raise UserError("the model has no trainable parameters: check model.backbone_training and the preset")
    groups = [{"params": decay, "weight_decay": float(train.get("weight_decay", 0.0))},
              {"params": no_decay, "weight_decay": 0.0}]
    betas = tuple(train.get("betas") or (0.9, 0.999))
    fused = True if device is not None and torch.device(device).type == "cuda" else None
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=float(train["lr"]), betas=betas,
                             eps=float(train.get("eps", 1e-8)), fused=fused)


def lr_factor(step: int, *, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak LR at optimizer step ``step`` (0-based, before the update)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer, *, warmup_steps: int, max_steps: int, min_lr_ratio: float):
    from torch.optim.lr_scheduler import LambdaLR

    return LambdaLR(optimizer, lambda s: lr_factor(s, warmup_steps=warmup_steps, max_steps=max_steps,
                                                   min_lr_ratio=min_lr_ratio))
