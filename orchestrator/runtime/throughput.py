"""Throughput figures of a training step for the metrics the trainer logs: beside its samples/s (global
batch / step time), model FLOPs utilisation (MFU) on GPUs.

MFU = model FLOPs of this rank's micro-batches (unigen.model.flops: what the step computes, forward and
backward, without recomputation) / step time / the device's dense bf16 matmul peak. The peak comes from
``UNIGEN_PEAK_TFLOPS`` when set (e.g. the figure bench/train_step.py measured), else from the vendor's
dense (non-sparse) bf16 tensor-core figure for the device name; unknown devices log no MFU rather than a
guess. Torch-free at import (the trainer imports this module; ``unigen`` CLI imports must stay light).
"""
from __future__ import annotations

import functools
import logging
import os
from typing import Any, Iterable, Mapping

log = logging.getLogger("unigen.runtime")

PEAK_ENV = "UNIGEN_PEAK_TFLOPS"

# Dense bf16 tensor-core TFLOP/s from the vendors' data sheets; the first name contained in the device
# name wins, so the specific names come before the general ones.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.4), ("H200", 989.4), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4),
    ("H800", 989.4), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.1), ("L40", 181.0),
    ("L4", 121.0), ("A10", 125.0), ("MI300X", 1307.4),
)


def device_peak_flops(name: str, env: Mapping[str, str] = os.environ) -> float | None:
    """bf16 matmul peak in FLOP/s for a device name (``torch.cuda.get_device_name()``), or None."""
    override = env.get(PEAK_ENV)
    if override:
        return float(override) * 1e12
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower():
            return tflops * 1e12
    return None


@functools.lru_cache(maxsize=8)
def _cuda_peak(device: str, override: str | None) -> float | None:
    import torch

    name = torch.cuda.get_device_name(torch.device(device))
    peak = device_peak_flops(name, {PEAK_ENV: override} if override else {})
    if peak is None:
        log.info("no bf16 peak known for %r: MFU is not logged (set %s to log it)", name, PEAK_ENV)
    return peak


def mfu_from(model_config: Any, micro_batches: Iterable[dict], step_time_s: float,
             peak_flops: float | None) -> dict[str, float]:
    """``{"mfu", "model_tflops"}`` for a step against a peak; empty without a peak or a step time."""
    if not peak_flops or step_time_s <= 0:
        return {}
    from unigen.model.flops import step_flops

    achieved = sum(step_flops(model_config, batch).total for batch in micro_batches) / step_time_s
    return {"mfu": achieved / peak_flops, "model_tflops": achieved / 1e12}


def mfu_metrics(model_config: Any, micro_batches: list[dict], step_time_s: float, device: str) -> dict[str, float]:
    """What the trainer logs per step besides samples/s: MFU of this rank on a GPU with a known peak; nothing
    on CPU runs, where a matmul peak says little about a step dominated by other work."""
    if not str(device).startswith("cuda"):
        return {}
    return mfu_from(model_config, micro_batches, step_time_s, _cuda_peak(str(device), os.environ.get(PEAK_ENV)))
