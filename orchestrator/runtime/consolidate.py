"""One place that turns a committed DeepSpeed step folder into full fp32 model weights (a state dict).

- ZeRO 1-3 checkpoints hold each rank's partition of the fp32 master weights
  (``*zero_pp_rank_<r>_mp_rank_00_optim_states.pt``): DeepSpeed's own ``zero_to_fp32`` merges them.
- Without ZeRO (``deepspeed.zero_stage: 0``, e.g. one CPU rank) there are no partitions: the module's
  weights are in ``mp_rank_00_model_states.pt`` whole, in the training dtype (fp32 masters too in fp32
  training, which is what the smoke recipes use); ``zero_to_fp32`` refuses such a folder.
A run with ``train.ema_decay`` kept an average of its trained weights (unigen.orchestrator.runtime.weight_average):
that average replaces the last weights here, so everything that reads a checkpoint's model reads the weights
the run hands on. Either way the result holds the trained parameters and the buffers, no frozen parameter (checkpoints
leave them out; older checkpoints that still have them give them too): the callers load it with
``strict=False`` into a pipeline built from the recipe, whose frozen parts come from the same source as
the run's, and refuse a missing trained tensor.
Used by the export at the end of a run, ``unigen export``, ``unigen eval``/``generate`` on a checkpoint,
and stage 2's ``init_from``.
"""
from __future__ import annotations

from pathlib import Path

MODEL_STATES = "mp_rank_00_model_states.pt"


def is_zero_partitioned(step_dir: Path) -> bool:
    """Whether the step folder holds ZeRO partitions (stages 1-3) rather than whole weights (stage 0)."""
    return any(Path(step_dir).glob("*zero_pp_rank_*optim_states.pt"))


def fp32_state_dict(step_dir: Path, *, average: bool = True) -> dict:
    """The model's weights in a committed step folder, as float32 tensors by parameter name: the weight
    average where the run kept one, unless ``average`` is False (the last weights)."""
    import torch

    from unigen.orchestrator.runtime.weight_average import full_average

    step_dir = Path(step_dir)
    if is_zero_partitioned(step_dir):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(step_dir.parent), tag=step_dir.name)
    else:
        # DeepSpeed pickles its own objects beside the weights (the saved config, the optimizer): a file we
        # wrote and verified (manifest sha256) before reading it.
        saved = torch.load(step_dir / MODEL_STATES, map_location="cpu", weights_only=False)
        state = {name: tensor.float() if tensor.is_floating_point() else tensor
                 for name, tensor in saved["module"].items()}
    kept = full_average(step_dir) if average else None
    if kept:
        state.update(kept)
    return state
