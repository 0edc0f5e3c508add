"""The global-batch rule: global batch = micro batch x gradient accumulation x world size, with a whole
accumulation. Torch-free, and the only place it is written: ``unigen validate`` / ``submit`` / ``resume``
(unigen.orchestrator.config.world.batch_problem), the DeepSpeed config and the data loader all call it.
"""
from __future__ import annotations


class BatchSplitError(ValueError):
    """The global batch does not split over micro batches and ranks."""


def split_problem(global_batch: int, micro_batch: int, world_size: int, why: str = "") -> str | None:
    """None when the global batch splits, else what is wrong and a global batch that would (``why``: how the
    world size was found, e.g. "local.cpu_ranks=2", shown in brackets after it)."""
    if global_batch <= 0 or micro_batch <= 0 or world_size <= 0:
        return (f"{global_batch}, micro_batch_size {micro_batch} and world size {world_size} must all be "
                "positive")
    per_step = micro_batch * world_size
    if global_batch % per_step == 0:
        return None
    near = max(per_step, round(global_batch / per_step) * per_step)
    where = f" ({why})" if why else ""
    return (f"{global_batch} is not a multiple of micro_batch_size {micro_batch} x world size {world_size}{where} "
            f"= {per_step}: use e.g. train.global_batch_size={near}, or change micro_batch_size or the profile")


def accumulation_steps(global_batch: int, micro_batch: int, world_size: int) -> int:
    """Micro batches per rank and optimizer step; BatchSplitError naming the fix when the batch does not split."""
    problem = split_problem(global_batch, micro_batch, world_size)
    if problem:
        raise BatchSplitError(f"train.global_batch_size {problem}")
    return global_batch // (micro_batch * world_size)
