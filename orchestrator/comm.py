"""The few collectives the checkpoint and preemption code needs, behind one small interface.

``TorchComm`` runs them over an initialised ``torch.distributed`` process group (gloo on CPU, NCCL on
GPUs); ``LocalComm`` is the single-process stand-in the CLI and one-rank runs use. torch is imported
only when a ``TorchComm`` is built, so ``import unigen.orchestrator.comm`` stays light.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Comm(Protocol):
    """What every rank of a job can do together. All methods are collective: every rank calls them, in
    the same order, or the job hangs."""

    rank: int
    world_size: int

    def barrier(self) -> None:
        """Return on every rank once all ranks have reached it."""

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """``obj`` as given on rank ``src`` (picklable), returned on every rank."""

    def all_reduce_any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on at least one rank."""

    def all_reduce_max(self, value: int) -> int:
        """The largest ``value`` over all ranks, on every rank."""


class LocalComm:
    """One process, no peers: every collective returns at once with this rank's own value."""

    rank = 0
    world_size = 1

    def barrier(self) -> None:
        return None

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        if src != 0:
            raise ValueError(f"broadcast_object: src={src} does not exist in a 1-rank job")
        return obj

    def all_reduce_any(self, flag: bool) -> bool:
        return bool(flag)

    def all_reduce_max(self, value: int) -> int:
        return int(value)


class TorchComm:
    """Collectives over the default (or a given) ``torch.distributed`` process group."""

    def __init__(self, group: Any = None):
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("TorchComm needs an initialised torch.distributed process group")
        self._dist = dist
        self._group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)

    def _device(self):
        import torch

        # NCCL reduces only CUDA tensors; gloo only CPU ones.
        if self._dist.get_backend(self._group) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def barrier(self) -> None:
        self._dist.barrier(group=self._group)

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        box = [obj if self.rank == src else None]
        self._dist.broadcast_object_list(box, src=src, group=self._group)
        return box[0]

    def all_reduce_any(self, flag: bool) -> bool:
        return self.all_reduce_max(1 if flag else 0) > 0

    def all_reduce_max(self, value: int) -> int:
        import torch

        t = torch.tensor([int(value)], dtype=torch.int64, device=self._device())
        self._dist.all_reduce(t, op=self._dist.ReduceOp.MAX, group=self._group)
        return int(t.item())
