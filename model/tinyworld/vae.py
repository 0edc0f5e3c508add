"""Pretraining the tiny world's DC-AE (``AutoencoderDC``, f4c4) on the pictures of a synthetic corpus.

The pictures are every image the corpus's sources put in a conversation (inputs and targets, at the
model's image size), read through unigen's own data loader: scenes, edits, depth, normal and segmentation
renders, skeletons, boxes. Skeletons and boxes are drawn with lines one or two pixels wide in exact
colours that their decoders look for, so their sources weigh more (``SOURCE_WEIGHTS``) and the loss adds
an L1 term on the images' horizontal and vertical differences, which a blurred line or disc pays for in
full while it costs flat regions nothing (with L1 + MSE alone, a first build kept 0.99 of scenes but
read back 0.02 of the joints and 0.38 of the boxes). The autoencoder is convolutional, so it trains on
random 32 x 32 crops (aligned to its 4-pixel cells) at a quarter of the cost of whole pictures.
Afterwards the latents' spread on the same pictures sets ``scaling_factor`` (1 / std), so the generator
sees unit-variance latents, as Sana's DC-AE gives.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from unigen.model.presets import TINY_SHAPES_VAE

CROP = 32
# Relative weights of the corpus's sources in the pictures (default 1): the thin-lined targets weigh more.
SOURCE_WEIGHTS = {"shapes-pose": 4.0, "shapes-refcoco": 2.0, "shapes-refcoco-coco": 2.0}
EDGE_WEIGHT = 1.0


@dataclass
class VaeSettings:
    steps: int = 4000
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 100
    seed: int = 0
    pictures: int = 12000
    image_size: int = 64


def corpus_pictures(root: str, settings: VaeSettings) -> torch.Tensor:
    """(N, 3, S, S) uint8: the images of the corpus's conversations, in the loader's deterministic order."""
    from unigen.model.data.loader import build_loader
    from unigen.model.data.spec import DataSpec
    from unigen.model.data.synth.layout import sources_for

    sources = [{**s, "weight": SOURCE_WEIGHTS.get(s["name"], 1.0)} for s in sources_for(root)]
    spec = DataSpec.model_validate({"sources": sources, "image_size": settings.image_size, "num_workers": 0})
    loader = build_loader(spec, _pictures_of, seed=settings.seed, global_batch_size=64, micro_batch_size=64,
                          rank=0, world_size=1)
    chunks, count = [], 0
    try:
        while count < settings.pictures:
            (chunk,) = loader.next_step()
            chunks.append(chunk)
            count += len(chunk)
    finally:
        loader.close()
    return torch.cat(chunks)[:settings.pictures]


def _pictures_of(conversations: list) -> torch.Tensor:
    """The loader's collate: every picture of the conversations at the image size, as uint8 CHW."""
    out = []
    for conversation in conversations:
        for message in conversation:
            for item in message["content"]:
                image = item.get("image") if item["type"] in ("image", "image_gen") else None
                if image is not None and image.size[0] == image.size[1]:
                    out.append(torch.from_numpy(np.asarray(image.convert("RGB"), np.uint8).copy()).permute(2, 0, 1))
    return torch.stack(out)


def build_vae():
    from diffusers import AutoencoderDC

    return AutoencoderDC.from_config(TINY_SHAPES_VAE)


def to_unit(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.float() / 127.5 - 1.0


def pretrain(pictures: torch.Tensor, settings: VaeSettings, log=print):
    """The trained autoencoder (eval mode, scaling_factor set)."""
    torch.manual_seed(settings.seed)
    vae = build_vae().train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(settings.seed)
    cells = (settings.image_size - CROP) // 4 + 1
    start, recent = time.perf_counter(), []
    for step in range(1, settings.steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = settings.lr * _lr_factor(step, settings)
        index = torch.randint(len(pictures), (settings.batch_size,), generator=generator)
        oy, ox = (torch.randint(cells, (2,), generator=generator) * 4).tolist()
        x = to_unit(pictures[index, :, oy:oy + CROP, ox:ox + CROP])
        loss = reconstruction_loss(vae(x).sample, x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        recent.append(float(loss))
        if step % 200 == 0 or step == settings.steps:
            log(f"vae step {step}/{settings.steps}: loss {np.mean(recent):.4f} ({time.perf_counter() - start:.0f} s)")
            recent = []
    vae.eval()
    vae.register_to_config(scaling_factor=round(1.0 / latent_std(vae, pictures[:512]), 5))
    return vae


def reconstruction_loss(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 + MSE on pixels, plus EDGE_WEIGHT x L1 on horizontal and vertical pixel differences."""
    error = out - x
    edges = (_dx(out) - _dx(x)).abs().mean() + (_dy(out) - _dy(x)).abs().mean()
    return error.abs().mean() + error.pow(2).mean() + EDGE_WEIGHT * edges


def _dx(x: torch.Tensor) -> torch.Tensor:
    return x[..., :, 1:] - x[..., :, :-1]


def _dy(x: torch.Tensor) -> torch.Tensor:
    return x[..., 1:, :] - x[..., :-1, :]


def _lr_factor(step: int, settings: VaeSettings) -> float:
    if step < settings.warmup:
        return (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def latent_std(vae, pictures: torch.Tensor) -> float:
    return float(torch.cat([vae.encode(to_unit(pictures[k:k + 64])).latent
                            for k in range(0, len(pictures), 64)]).std())


@torch.no_grad()
def reconstruct(vae, pixels: torch.Tensor) -> np.ndarray:
    """uint8 (N, H, W, 3) reconstructions of uint8 (N, 3, H, W) pictures."""
    out = vae.decode(vae.encode(to_unit(pixels)).latent).sample.clamp(-1, 1)
    return ((out.permute(0, 2, 3, 1).numpy() + 1.0) * 127.5).round().astype(np.uint8)


def save(vae, folder) -> None:
    """diffusers' layout (config.json + diffusion_pytorch_model.safetensors), float16 weights."""
    torch.nn.Module.to(vae, torch.float16).save_pretrained(folder)
    torch.nn.Module.to(vae, torch.float32)
