"""Build the model, optimizer and DeepSpeed engine a recipe asks for (per rank)."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from unigen.orchestrator.config.model_section import OWN_KEYS
from unigen.orchestrator.config.recipe import ModelSection, TrainSection
from unigen.orchestrator.errors import UserError

log = logging.getLogger("unigen.runtime")


def build_pipeline(model: ModelSection, init_weights: Path | None, *, ds_config: dict[str, Any] | None = None,
                   partitioned: bool | None = None):
    """The UniGenPipeline of a recipe's ``model`` section, with stage-1 weights loaded when given.

    All ranks call this with the same seed set beforehand: ZeRO-3 partitions each rank's own copy of
    the parameters, so every rank must build identical ones. Given the run's DeepSpeed config (``ds_config``)
    with ZeRO stage 3, the trainable parts are built partitioned (unigen.model.zero_init), so a rank never
    holds them whole; ``partitioned=False`` forces the plain build (bench/host_memory.py compares the two).
    """
    from unigen.model import UniGenPipeline

    section = model.model_dump(mode="json")
    # The UniGenConfig overrides: every set key of the section but preset and pretrained.
    overrides = {k: v for k, v in section.items() if k not in OWN_KEYS and v is not None}
    if partitioned is None:
        partitioned = ds_config is not None and int(ds_config["zero_optimization"]["stage"]) == 3
    why_plain = _plain_build_reason(section, overrides) if partitioned else None
    if why_plain:
        log.info("building the whole model on every rank before ZeRO-3 partitions it: %s", why_plain)
    if partitioned and not why_plain:
        if ds_config is None:
            raise ValueError("a partitioned build needs the run's DeepSpeed config (ds_config)")
        from unigen.model.config import get_preset
        from unigen.model.processor import UniGenProcessor
        from unigen.model.zero_init import build_partitioned

        config = get_preset(section["preset"], **overrides)
        pipe = UniGenPipeline(build_partitioned(config, ds_config), UniGenProcessor.from_config(config))
        log.info("built the trainable parts partitioned under ZeRO-3 (deepspeed.zero.Init), the frozen parts whole")
    elif section.get("pretrained"):
        pipe = UniGenPipeline.from_pretrained(section["pretrained"], **overrides)
    else:
        pipe = UniGenPipeline.from_preset(section["preset"], **overrides)
    if init_weights is not None:
        load_init_weights(pipe.model, init_weights)
    return pipe


def _plain_build_reason(section: dict[str, Any], overrides: dict[str, Any]) -> str | None:
    """Why a ZeRO-3 run builds the whole model first after all (None: it does not)."""
    if section.get("pretrained"):
        return "model.pretrained (a whole unigen export) is loaded as saved"
    if overrides.get("backbone_training") == "full":
        return "model.backbone_training=full trains the backbone, which is loaded whole from its source"
    return None


def load_init_weights(model, state_path: Path) -> None:
    """Load a consolidated state dict (the previous stage's weights) into ``model``.

    Frozen components that the previous stage saved identically are loaded too; a key the model does
    not have, or a missing trainable key, is an error (a stage-2 recipe whose model does not match
    stage 1's).
    """
    import torch

    from unigen.model.components import widen_dit_input_state
    from unigen.model.zero_init import is_partitioned, load_state

    # Memory-mapped: a tensor is read from disk only when copied, so under ZeRO-3 the ranks other than 0
    # never read the trainable tensors (load_state copies those on rank 0 only).
    state = widen_dit_input_state(torch.load(state_path, map_location="cpu", weights_only=True, mmap=True), model)
    if any(is_partitioned(p) for p in model.parameters()):
        missing, unexpected = load_state(model, state, strict=False, origin=f"init_from weights {state_path}")
    else:
        missing, unexpected = model.load_state_dict(state, strict=False)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    trainable_missing = [k for k in missing if k in trainable]
    if unexpected or trainable_missing:
        raise UserError(
            f"init_from weights {state_path} do not match this recipe's model: "
            f"{len(trainable_missing)} trainable tensors missing (e.g. {trainable_missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}); stage 2 must use stage 1's model settings")
    log.info("loaded init weights from %s (%d tensors)", state_path, len(state))


def build_optimizer(model, train: TrainSection, *, device=None):
    """torch AdamW over the trainable parameters (lr, betas, eps, weight_decay of the recipe's ``train``),
    no weight decay on norms, biases and queries.

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
    groups = [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = True if device is not None and torch.device(device).type == "cuda" else None
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=train.lr, betas=tuple(train.betas),
                             eps=train.eps, fused=fused)


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
