"""Rectified flow: training times, noising, the velocity target, and the sampling schedule.

Convention (Sana's, and diffusers' FlowMatchEulerDiscreteScheduler's): x_s = (1 - s) x0 + s e with s in
(0, 1); the DiT sees timestep 1000 s and predicts the velocity e - x0; sampling integrates from s = 1
(noise) to s = 0 with Euler steps x <- x + (s_next - s) v.
"""
from __future__ import annotations

import torch

TIMESTEP_SCALE = 1000.0


def sample_flow_times(count: int, sampling: str, device: torch.device) -> torch.Tensor:
    """Training times s in (0, 1): 'logit_normal' = sigmoid(N(0, 1)) (Sana, SD3) or 'uniform'."""
    if sampling == "logit_normal":
        return torch.sigmoid(torch.randn(count, device=device))
    if sampling == "uniform":
        return torch.rand(count, device=device)
    raise ValueError(f"timestep_sampling={sampling!r}: choose 'logit_normal' or 'uniform'")


def shift_times(times: torch.Tensor, shift: float) -> torch.Tensor:
    """s' = k s / (1 + (k-1) s): the same map as the sampling schedule's shift (k = 1: unchanged)."""
    if shift == 1.0:
        return times
    return shift * times / (1.0 + (shift - 1.0) * times)


def noisy_latents(latents: torch.Tensor, noise: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """x_s = (1 - s) x0 + s e, with s broadcast over (C, H, W)."""
    s = times.view(-1, *([1] * (latents.ndim - 1))).to(latents.dtype)
    return (1.0 - s) * latents + s * noise


def velocity_target(latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """d x_s / d s = e - x0."""
    return noise - latents


def per_sample_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample, in float32."""
    return (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)


def make_scheduler(flow_shift: float):
    """diffusers' flow-matching Euler scheduler with Sana's inference shift.

    diffusers converts the Sana 512 px and 1024 px checkpoints with ``flow_shift = 3.0`` (6.0 only at
    4096 px): scripts/convert_sana_to_diffusers.py in huggingface/diffusers, which writes that shift into
    the pipeline's scheduler (DPMSolverMultistepScheduler(flow_shift=...) or
    FlowMatchEulerDiscreteScheduler(shift=...)). UniGenConfig.flow_shift defaults to it.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=flow_shift)
