"""What a checkpoint holds besides DeepSpeed's own files, and how a rank writes and reads it.

Per rank, in ``step-<N>/``:
- DeepSpeed ZeRO files (``zero_pp_rank_<r>_mp_rank_00_{model,optim}_states.pt``; the optimizer and
  LR scheduler state are inside);
- ``unigen-rank<r>.pt``: this rank's RNG states (python, numpy, torch) and the trainer state.

Rank 0's trainer state (step, samples seen, data-loader state, MLflow run id) also goes into
COMMIT.json's metadata, so ``unigen resume --plan`` and the CLI can read it without torch.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from unigen.orchestrator.runtime import rng

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


def make_write_fn(engine, *, rank: int, trainer_state: dict[str, Any]):
    """The ``write_fn`` CheckpointManager.save calls on every rank: DeepSpeed files + our state."""

    def write(step_dir: Path) -> list[str]:
        import torch

        engine.save_checkpoint(str(step_dir.parent), tag=step_dir.name, save_latest=False,
                               client_state={"unigen": trainer_state})
        torch.save({"rng": rng.capture(), "trainer": trainer_state}, step_dir / rank_state_name(rank))
        return sorted(p.name for p in step_dir.iterdir() if p.is_file() and
                      (owned_by(p.name, rank) or p.name == rank_state_name(rank)))

    return write


def load_rank_state(step_dir: Path, rank: int) -> dict[str, Any] | None:
    """This rank's saved RNG + trainer state, or None when the checkpoint came from fewer ranks."""
    import torch

    path = Path(step_dir) / rank_state_name(rank)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)
