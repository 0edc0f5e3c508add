"""Bring up torch.distributed through DeepSpeed, on GPUs (NCCL) or CPUs (gloo)."""
from __future__ import annotations

import datetime
import os

from unigen.orchestrator.runtime.context import RankContext


def _skip_cpu_shm_op() -> None:
    """DeepSpeed's CPU accelerator JIT-compiles a shared-memory allreduce op when the process group
    starts (45-80 s with gcc, a hard failure without). It only speeds up intra-node CPU reductions,
    which gloo does fine for our purposes, so report the op as unavailable and DeepSpeed skips it."""
    from deepspeed.accelerator import get_accelerator

    acc = get_accelerator()
    if acc.device_name() != "cpu" or getattr(acc, "_unigen_no_shm", False):
        return
    original = acc.create_op_builder

    def create_op_builder(class_name: str):
        return None if class_name == "ShareMemCommBuilder" else original(class_name)

    acc.create_op_builder = create_op_builder
    acc._unigen_no_shm = True


def init_distributed(ctx: RankContext, timeout_s: float = 600.0) -> str:
    """Initialise the process group; returns the torch device string for this rank."""
    import torch

    use_cuda = torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR", "cuda") != "cpu"
    if not use_cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    if use_cuda:
        torch.cuda.set_device(ctx.local_rank)
        backend, device = "nccl", f"cuda:{ctx.local_rank}"
    else:
        _skip_cpu_shm_op()
        backend, device = "gloo", "cpu"
    deepspeed.init_distributed(dist_backend=backend, timeout=datetime.timedelta(seconds=timeout_s),
                               verbose=False)
    return device


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
