"""Resume a ZeRO-3 checkpoint on a different number of ranks (e.g. 2 -> 1).

A ZeRO-3 checkpoint holds each rank's flat partition of the fp32 master weights and optimizer
moments, so it can only be loaded as-is by the world size that wrote it. DeepSpeed's universal
checkpoint format stores them per parameter instead; rank 0 converts the committed step folder once
(``deepspeed.checkpoint.ds_to_universal``) into ``<run>/reshard/step-<N>/`` (never inside the verified
step folder, which stays immutable), and every rank then loads it with the engine's universal
loader, which re-partitions for the current world size. Weights, Adam moments, the optimizer step
and the LR scheduler carry over; RNG states do not (they were per rank), which is why a resharded
run continues the data order exactly but not bit for bit. The frozen parameters are in neither copy
(checkpoints leave them out): the universal loader fills the optimizer's partitions only, and the frozen
tensors keep the values the rank built (unigen.orchestrator.runtime.state).
"""
from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from unigen.orchestrator.comm import Comm

log = logging.getLogger("unigen.runtime")
DONE = "CONVERTED"


def universal_dir(step_dir: Path) -> Path:
    """Where the universal copy of ``<run>/checkpoints/step-<N>`` goes: ``<run>/reshard/step-<N>``."""
    return step_dir.parent.parent / "reshard" / step_dir.name


def convert(step_dir: Path) -> Path:
    """Write the universal copy of ``step_dir`` (once; a finished copy is marked by CONVERTED)."""
    from deepspeed.checkpoint import ds_to_universal

    out = universal_dir(step_dir)
    if (out / DONE).is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)  # a conversion interrupted earlier
    out.parent.mkdir(parents=True, exist_ok=True)
    args = argparse.Namespace(input_folder=str(step_dir), output_folder=str(out), num_extract_workers=1,
                              num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=False)
    ds_to_universal.main(args)
    (out / DONE).write_text(step_dir.name + "\n")
    return out


def load_resharded(engine, step_dir: Path, *, comm: Comm) -> None:
    """Load ``step_dir`` (written by another world size) into ``engine`` on every rank."""
    if comm.rank == 0:
        log.info("checkpoint %s was written by another world size: converting it to DeepSpeed's universal "
                 "format for %d rank(s)", step_dir, comm.world_size)
        convert(step_dir)
    comm.barrier()
    out = universal_dir(step_dir)
    config = engine._config  # the universal loader is chosen by this flag at load time
    config.load_universal_checkpoint = True
    try:
        engine.load_checkpoint(str(out.parent), tag=out.name, load_optimizer_states=True,
                               load_lr_scheduler_states=True)
    finally:
        config.load_universal_checkpoint = False
