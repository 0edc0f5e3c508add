"""The DeepSpeed config a run uses, derived from its resolved recipe and world size.

Torch-free on purpose: ``unigen validate`` and ``unigen submit --dry-run`` print it, and MLflow records
it as an artifact. The optimizer and LR schedule are NOT in this config: the runtime passes a torch
AdamW and a LambdaLR to ``deepspeed.initialize`` (DeepSpeed's own "AdamW" JIT-compiles fused_adam on
machines without prebuilt ops, +97 s on CPU; see STACK.md).
"""
from __future__ import annotations

import copy
from typing import Any

from unigen.orchestrator.errors import UserError


def accumulation_steps(global_batch: int, micro_batch: int, world_size: int) -> int:
    """global = micro x accumulation x world; anything else is a recipe/profile mismatch."""
    per_step = micro_batch * world_size
    if global_batch % per_step:
        raise UserError(
            f"train.global_batch_size={global_batch} is not a multiple of train.micro_batch_size={micro_batch}"
            f" x world size {world_size} = {per_step}: change one of them (e.g. global_batch_size="
            f"{max(per_step, global_batch // per_step * per_step)})")
    return global_batch // per_step


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_deepspeed_config(recipe: dict[str, Any], world_size: int) -> dict[str, Any]:
    """DeepSpeed config for ``recipe`` (a resolved recipe as a plain dict) on ``world_size`` ranks."""
    train = recipe["train"]
    ds = recipe.get("deepspeed") or {}
    gbs, mbs = int(train["global_batch_size"]), int(train["micro_batch_size"])
    acc = accumulation_steps(gbs, mbs, world_size)
    stage = int(ds.get("zero_stage", 3))
    precision = train.get("precision", "bf16")
    zero: dict[str, Any] = {"stage": stage}
    if stage == 3:
        zero.update({
            "contiguous_gradients": True,
            "overlap_comm": False,  # keeps reductions in program order: bit-exact resume on CPU
            "stage3_gather_16bit_weights_on_model_save": False,  # export goes through zero_to_fp32
        })
    config: dict[str, Any] = {
        "train_batch_size": gbs,
        "train_micro_batch_size_per_gpu": mbs,
        "gradient_accumulation_steps": acc,
        "gradient_clipping": float(train.get("grad_clip", 1.0) or 0.0),
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": False},
        "zero_allow_untested_optimizer": True,  # we pass torch.optim.AdamW on purpose (no JIT ops)
        "steps_per_print": 2**31 - 1,  # unigen logs; DeepSpeed's own prints would interleave ranks
        "wall_clock_breakdown": False,
    }
    return _merge(config, ds.get("config") or {})
