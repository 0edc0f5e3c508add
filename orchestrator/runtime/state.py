"""What a checkpoint holds besides DeepSpeed's own files, and how a rank writes and reads it.

Per rank, in ``step-<N>/``:
- DeepSpeed ZeRO files (``zero_pp_rank_<r>_mp_rank_00_{model,optim}_states.pt``; the optimizer and
  LR scheduler state are inside);
- ``unigen-rank<r>.pt``: this rank's RNG states (python, numpy, torch), the trainer state and, with
  ``train.ema_decay``, this rank's part of the weight average (unigen.orchestrator.runtime.weight_average).

A checkpoint holds what trains, nothing frozen: every save passes DeepSpeed's
``exclude_frozen_parameters``, so the frozen backbone and VAE (about 4B parameters at unigen-3b, which
never change) are neither written nor uploaded at every step. On resume they come from where the run
got them in the first place: the build of the recipe's pipeline (pretrained weights, or the preset's
seeded random init, identical because every rank seeds with ``train.seed`` before building: see
``build_seed``), and ``load_engine_state`` accepts a module state without them. A LoRA backbone's
``lora_`` tensors train, so they are saved; its frozen base is not. Buffers are always saved.

Rank 0's trainer state (step, samples seen, data-loader state, MLflow run id) also goes into
COMMIT.json's metadata, so ``unigen resume --plan`` and the CLI can read it without torch.
"""
from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

from unigen.orchestrator.config.recipe import TrainSection
from unigen.orchestrator.runtime import rng
from unigen.orchestrator.runtime.weight_average import STATE_KEY

# DeepSpeed names the files of data-parallel rank r "zero_pp_rank_<r>_mp_rank_00_...", optionally with
# a "bf16_" prefix for the optimizer states; files without a rank ("mp_rank_00_model_states.pt",
# ZeRO stages 0-2) are written by rank 0.
_ZERO_RANK = re.compile(r"^(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_\d+_")
_RANK0_ONLY = re.compile(r"^mp_rank_\d+_model_states\.pt$")


def owned_by(name: str, rank: int) -> bool:
    m = _ZERO_RANK.match(name)
    if m:
        return int(m.group(1)) == rank
    return rank == 0 and bool(_RANK0_ONLY.match(name))


def rank_state_name(rank: int) -> str:
    return f"unigen-rank{rank}.pt"


def make_write_fn(engine, *, rank: int, trainer_state: dict[str, Any], weight_average=None):
    """The ``write_fn`` CheckpointManager.save calls on every rank: DeepSpeed files + our state (with the
    run's ``weight_average.WeightAverage``, if it keeps one)."""

    def write(step_dir: Path) -> list[str]:
        import torch

        with _frozen_aliases_left_out(engine):
            engine.save_checkpoint(str(step_dir.parent), tag=step_dir.name, save_latest=False,
                                   client_state={"unigen": trainer_state}, exclude_frozen_parameters=True)
        own = {"rng": rng.capture(), "trainer": trainer_state}
        if weight_average is not None:
            own[STATE_KEY] = weight_average.state(rank)
        torch.save(own, step_dir / rank_state_name(rank))
        return sorted(p.name for p in step_dir.iterdir() if p.is_file() and
                      (owned_by(p.name, rank) or p.name == rank_state_name(rank)))

    return write


@contextlib.contextmanager
def _frozen_aliases_left_out(engine):
    """DeepSpeed's ``exclude_frozen_parameters`` drops a frozen tensor under its first name only; a tied alias
    (Qwen's ``lm_head.weight`` is ``embed_tokens.weight``: 311M parameters at unigen-3b) would stay in the
    module state of ZeRO 0-2. For the duration of one save, the engine's ``module_state_dict`` drops every
    name of every frozen tensor."""
    plain = engine.module_state_dict

    def module_state_dict(*args, exclude_frozen_parameters: bool = False, **kwargs):
        state = plain(*args, exclude_frozen_parameters=exclude_frozen_parameters, **kwargs)
        if exclude_frozen_parameters and state is not None:
            for name in frozen_parameter_names(engine.module):
                state.pop(name, None)
        return state

    engine.module_state_dict = module_state_dict  # this instance only, and only while it saves
    try:
        yield
    finally:
        del engine.module_state_dict


def build_seed(train: TrainSection) -> int:
    """The seed every rank (and the export) sets right before ``build_pipeline``: ``train.seed``. The frozen
    parts of a random-weight preset (``tiny``) exist only in that build, so they need the same seed each time."""
    return train.seed


def frozen_parameter_names(module) -> set[str]:
    """Names (as in ``state_dict``, tied aliases included) of the parameters that do not train: what a save
    leaves out."""
    return {name for name, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad}


def load_module_without_frozen(src: dict[str, Any], dst) -> None:
    """Load a saved module state into ``dst`` (DeepSpeed's ``custom_load_fn``): frozen parameters may be
    absent (they stay as built); anything else absent, or a tensor ``dst`` does not have, is an error."""
    from unigen.orchestrator.checkpoint import CheckpointError

    missing, unexpected = dst.load_state_dict(src, strict=False)
    frozen = frozen_parameter_names(dst)
    lost = [k for k in missing if k not in frozen]
    if lost or unexpected:
        raise CheckpointError(
            f"the checkpoint's module state does not match this run's model: {len(lost)} trained tensors or "
            f"buffers missing (e.g. {lost[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}); resume "
            "with the recipe the checkpoint was written by")


def load_engine_state(engine, step_dir: Path) -> None:
    """Weights, optimizer and LR scheduler of a checkpoint written by this world size (or any world size
    without ZeRO) into ``engine``; the frozen parameters keep their built values."""
    step_dir = Path(step_dir)
    engine.load_checkpoint(str(step_dir.parent), tag=step_dir.name, load_optimizer_states=True,
                           load_lr_scheduler_states=True, load_module_strict=False,
                           custom_load_fn=load_module_without_frozen)


def load_rank_state(step_dir: Path, rank: int) -> dict[str, Any] | None:
    """This rank's saved RNG + trainer state, or None when the checkpoint came from fewer ranks."""
    import torch

    path = Path(step_dir) / rank_state_name(rank)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)
