"""An exponential moving average of the trained weights (recipe ``train.ema_decay``), the weights a run
hands on: its export, ``unigen eval``/``generate`` on a checkpoint, the next stage's ``init_from``, and the
evaluation during training all read the average, as diffusion trainers do with their EMA weights.

Why: the weights after the last optimizer step carry that step's noise and, in a fine-tuning stage, the pull
of its newest tasks. Measured on the smoke stage 2 (runbooks/evaluation.md): text-to-image colour 0.72 from
the last weights, 0.8+ from their average with decay 0.995 (same run).

Each rank averages the tensors it holds: its ZeRO-3 partition of every trained parameter
(``param.ds_tensor``), or the whole parameter without ZeRO-3 (every rank then holds the same average, and
rank 0 saves it). The average is fp32, starts at the weights training starts from (stage 1's, for a stage 2)
and follows every optimizer step: ``average <- decay * average + (1 - decay) * weight``. It is saved in each
rank's state file of a checkpoint (``unigen-rank<r>.pt``, key ``weight_average``), so a resume continues
it bit for bit; ``full_average`` joins the partitions into whole tensors by name, for the readers of a
checkpoint and for a resume on another number of ranks.
"""
from __future__ import annotations

import contextlib
import math
import re
from pathlib import Path
from typing import Any

STATE_KEY = "weight_average"
_RANK_FILE = re.compile(r"^unigen-rank(\d+)\.pt$")


def _held(param):
    """The tensor of ``param`` this rank owns: its ZeRO-3 partition, else the parameter itself."""
    return param.ds_tensor if hasattr(param, "ds_tensor") else param.data


class WeightAverage:
    """The average of one rank's trained tensors. Build it after the weights training starts from are loaded."""

    def __init__(self, module, decay: float):
        import torch

        self.decay = decay  # in (0, 1): the recipe checks train.ema_decay
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.partitioned = any(hasattr(p, "ds_tensor") for p in self.params)
        with torch.no_grad():
            self.tensors = [_held(p).detach().float().clone() for p in self.params]

    def update(self) -> None:
        """Fold the current weights in; call once per optimizer step, after it."""
        import torch

        with torch.no_grad():
            for average, param in zip(self.tensors, self.params):
                average.lerp_(_held(param).float(), 1.0 - self.decay)

    # -- checkpoints ----------------------------------------------------------------------------
    def state(self, rank: int) -> dict[str, Any] | None:
        """What this rank saves (None: rank 0 saves the whole average for every rank)."""
        if not self.partitioned and rank != 0:
            return None
        shapes = {n: list(getattr(p, "ds_shape", p.shape)) for n, p in zip(self.names, self.params)}
        return {"decay": self.decay, "partitioned": self.partitioned, "shapes": shapes,
                "tensors": dict(zip(self.names, self.tensors))}

    def load(self, step_dir: Path, *, rank: int, own: dict[str, Any] | None) -> None:
        """Continue the average saved in ``step_dir``. ``own``: this rank's saved state when the checkpoint was
        written by as many ranks as now (its partitions are then this rank's), else None (cut from the whole)."""
        from unigen.orchestrator.checkpoint import CheckpointError

        own = (own or {}).get(STATE_KEY)
        if self.partitioned and own is not None and own["partitioned"]:
            saved = own["tensors"]
        else:
            whole = full_average(step_dir)
            if whole is None:
                raise CheckpointError(f"{step_dir} holds no weight average, but this run keeps one "
                                      "(train.ema_decay): resume with the recipe the checkpoint was written by")
            saved = {n: self._own_part(whole[n], p, rank) if n in whole else None
                     for n, p in zip(self.names, self.params)}
        lost = [n for n in self.names if saved.get(n) is None]
        if lost:
            raise CheckpointError(f"the weight average in {step_dir} lacks {len(lost)} trained tensors "
                                  f"(e.g. {lost[:3]}): resume with the recipe the checkpoint was written by")
        for i, name in enumerate(self.names):
            self.tensors[i].copy_(saved[name])

    def _own_part(self, whole, param, rank: int):
        """This rank's piece of a whole tensor, cut the way ZeRO-3 partitions a parameter: flattened, padded
        to a multiple of the world size, rank r holding the r-th equal slice."""
        import torch

        if not self.partitioned:
            return whole
        size = _held(param).numel()
        flat = whole.flatten()[rank * size:(rank + 1) * size]
        return torch.cat([flat, flat.new_zeros(size - flat.numel())])

    # -- evaluation -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def in_place(self):
        """Within the block the model computes with the average; the trained weights are back afterwards,
        bit for bit. Collective under ZeRO-3 (every rank enters it)."""
        import torch

        with torch.no_grad():
            kept = [_held(p).clone() for p in self.params]
        self._write(self.tensors)
        try:
            yield
        finally:
            self._write(kept)

    def _write(self, values) -> None:
        """Set the held tensors. ZeRO-3 keeps some parameters gathered between steps (those under its
        persistence threshold): they are released first and gathered again from the partitions just written."""
        import torch

        gathered = [p for p in self.params if self.partitioned and _gathered(p)]
        if gathered:
            gathered[0].partition(param_list=gathered, has_been_updated=False)
        with torch.no_grad():
            for value, param in zip(values, self.params):
                _held(param).copy_(value)
        if gathered:
            gathered[0].all_gather(param_list=gathered)


def _gathered(param) -> bool:
    """Whether a ZeRO-3 parameter holds its whole tensor right now."""
    status = getattr(param, "ds_status", None)
    return status is not None and status.name == "AVAILABLE"


def full_average(step_dir: Path) -> dict[str, Any] | None:
    """The weight average in a committed step folder as whole fp32 tensors by parameter name, or None when
    the run kept none."""
    import torch

    step_dir = Path(step_dir)
    files = sorted((int(m.group(1)), p) for p in step_dir.iterdir() if (m := _RANK_FILE.match(p.name)))
    states = [torch.load(p, map_location="cpu", weights_only=False).get(STATE_KEY) for _, p in files]
    if not states or states[0] is None:
        return None
    first = states[0]
    if not first["partitioned"]:
        return dict(first["tensors"])
    whole = {}
    for name, shape in first["shapes"].items():
        flat = torch.cat([s["tensors"][name].flatten() for s in states])
        whole[name] = flat[:math.prod(shape)].view(shape)
    return whole
