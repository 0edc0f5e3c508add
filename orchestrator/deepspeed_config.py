"""The DeepSpeed config a run uses, derived from its resolved recipe and world size.

Torch-free on purpose: ``unigen validate`` and ``unigen submit --dry-run`` print it, and MLflow records
it as an artifact. The optimizer and LR schedule are NOT in this config: the runtime passes a torch
AdamW and a LambdaLR to ``deepspeed.initialize`` (DeepSpeed's own "AdamW" JIT-compiles fused_adam on
machines without prebuilt ops, +97 s on CPU; see STACK.md).

CPU and GPU runs differ in one respect, on purpose (``gpu_zero_settings``): on GPUs ZeRO overlaps its
gradient reductions and parameter gathers with the backward pass (``overlap_comm``) in buckets sized for
NCCL; on CPU ranks (gloo: the tests, the smoke recipes, a laptop) every collective runs in program order,
which is where resume is measured bit for bit (tests/e2e/test_fault_tolerance.py). Overlapped reductions
can sum a gradient's pieces in another order from one run to the next, so a GPU resume continues the
same samples with the same weights and optimizer state but its losses may differ in the last bits
(runbooks/preemption-and-resume.md).
"""
from __future__ import annotations

from typing import Any

from unigen.orchestrator.config.model_section import deep_merge
from unigen.orchestrator.config.recipe import DeepSpeedSection, TrainSection
from unigen.orchestrator.errors import UserError


def accumulation_steps(global_batch: int, micro_batch: int, world_size: int) -> int:
    """global = micro x accumulation x world (unigen.model.data.batching); a mismatch is the user's to fix."""
    from unigen.model.data.batching import BatchSplitError, accumulation_steps as split

    try:
        return split(global_batch, micro_batch, world_size)
    except BatchSplitError as err:
        raise UserError(str(err)) from None


# Communication buckets, in elements. DeepSpeed's defaults are 5e8; with overlap_comm ZeRO 1-2 keep about
# 4.5 x a bucket in flight (at 2 B/element under bf16: ~4.5 GB at 5e8), so 2e8 (~1.8 GB) leaves that memory
# to activations while each NCCL call still moves hundreds of MB.
GPU_BUCKET = int(2e8)
# ZeRO-3 gathers the next modules' weights while the current one runs, up to this many elements
# (DeepSpeed's default 5e7: most of one unigen-3b DiT block, ~8e7 parameters), and keeps parameters smaller
# than the threshold (DeepSpeed's default 1e5: norms, biases) whole on every rank instead of gathering each.
GPU_PREFETCH_BUCKET = int(5e7)
GPU_PERSISTENCE_THRESHOLD = int(1e5)


def gpu_zero_settings(stage: int) -> dict[str, Any]:
    """The ``zero_optimization`` keys a GPU run adds for speed (none without ZeRO)."""
    if stage == 0:
        return {}
    settings: dict[str, Any] = {
        "overlap_comm": True,  # reduce (and under ZeRO-3 gather) while backward still computes
        "contiguous_gradients": True,  # gradients copied into one buffer as they are reduced: no fragmentation
        "reduce_bucket_size": GPU_BUCKET,
    }
    if stage in (1, 2):
        settings.update({"reduce_scatter": True, "allgather_bucket_size": GPU_BUCKET})
    else:
        settings.update({"stage3_prefetch_bucket_size": GPU_PREFETCH_BUCKET,
                         "stage3_param_persistence_threshold": GPU_PERSISTENCE_THRESHOLD})
    return settings


def build_deepspeed_config(train: TrainSection, ds: DeepSpeedSection, world_size: int, *,
                           gpus: bool = False) -> dict[str, Any]:
    """DeepSpeed config for a recipe's ``train`` and ``deepspeed`` sections on ``world_size`` ranks, each a
    GPU when ``gpus`` (else a CPU rank: reductions in program order, see the module docstring)."""
    gbs, mbs = train.global_batch_size, train.micro_batch_size
    stage = ds.zero_stage
    zero: dict[str, Any] = {"stage": stage}
    if stage == 3:
        zero.update({
            "contiguous_gradients": True,
            "overlap_comm": False,  # keeps reductions in program order: bit-exact resume on CPU
            "stage3_gather_16bit_weights_on_model_save": False,  # export goes through zero_to_fp32
        })
    if gpus:
        zero.update(gpu_zero_settings(stage))
    config: dict[str, Any] = {
        "train_batch_size": gbs,
        "train_micro_batch_size_per_gpu": mbs,
        "gradient_accumulation_steps": accumulation_steps(gbs, mbs, world_size),
        "gradient_clipping": train.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": train.precision == "bf16"},
        "fp16": {"enabled": False},
        "zero_allow_untested_optimizer": True,  # we pass torch.optim.AdamW on purpose (no JIT ops)
        "steps_per_print": 2**31 - 1,  # unigen logs; DeepSpeed's own prints would interleave ranks
        "wall_clock_breakdown": False,
    }
    return deep_merge(config, ds.config)
