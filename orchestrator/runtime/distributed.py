"""Who this process is in the job (``RankContext``), bringing up torch.distributed through DeepSpeed on
GPUs (NCCL) or CPUs (gloo), and moving batches to the rank's device."""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Mapping

from unigen.orchestrator.errors import UserError

_REQUIRED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class RankContext:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    attempt: int
    job_id: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "RankContext":
        missing = [k for k in _REQUIRED if k not in env]
        if missing:
            raise UserError(
                f"the runtime needs {', '.join(missing)} in its environment: start it through `unigen submit` "
                "(or set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT yourself)")
        return cls(rank=int(env["RANK"]), world_size=int(env["WORLD_SIZE"]), local_rank=int(env["LOCAL_RANK"]),
                   master_addr=env["MASTER_ADDR"], master_port=int(env["MASTER_PORT"]),
                   attempt=int(env.get("UNIGEN_ATTEMPT", "1")), job_id=env.get("UNIGEN_JOB_ID"))


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


def to_device(batch: dict[str, Any], device: str) -> dict[str, Any]:
    """A collated batch's tensors to ``device`` (non-blocking from pinned memory); everything else as it is."""
    import torch

    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
