"""Model FLOPs of a UniGen training step: what the step computes, without recomputation.

Used for MFU (achieved FLOP/s over the device's bf16 matmul peak) by the runtime's throughput metrics and
by bench/train_step.py. Counted like ``torch.utils.flop_counter`` counts (matmuls, convolutions and
attention; 2 FLOPs per multiply-add; attention as the dense q x k product), so the two agree:
- the backbone (Qwen2.5-VL text, and the vision tower on input images) and the connector from formulas
  on the configs: their shapes are plain linear layers and attention;
- the Sana DiT (training) and the DC-AE encoder from ``FlopCounterMode`` on modules built from the configs
  on the meta device (shape propagation only: no memory, about a second), cached per config.

What the step computes depends on the switches: with ``frozen_prefix_cache`` the prompt before the first
slot is a forward pass only and the backward covers the slot span; a frozen layer's backward computes input
gradients only (1x its forward), a trained one input and weight gradients (2x); pixel targets add a DC-AE
encode, precomputed latents do not.

``flop_counter()`` is FlopCounterMode with two fixes: torch's formula for a convolution's backward ignores
``groups`` and charges a depthwise 3x3 conv (Sana's GLUMBConv, DC-AE) as a dense one, channels times too
much; and its attention formula rejects grouped-query attention (enable_gqa), which transformers uses.
It also runs attention on the math kernel, whose matmuls every device counts (CPU's fused kernel has no
formula and would count as zero).
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from unigen.model.config import UniGenConfig


# ---- counting ---------------------------------------------------------------------------------------
def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import conv_flop_count

    # Input and weight gradients each cost one forward's multiply-adds; w_shape already holds in/groups.
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


@contextlib.contextmanager
def flop_counter():
    """A FlopCounterMode (display off) that counts grouped convolutions and grouped-query attention right."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    original = F.scaled_dot_product_attention

    def sdpa(q, k, v, *args, enable_gqa=False, **kwargs):
        if enable_gqa and k.shape[-3] != q.shape[-3]:
            repeat = q.shape[-3] // k.shape[-3]
            k, v = k.repeat_interleave(repeat, -3), v.repeat_interleave(repeat, -3)
        return original(q, k, v, *args, **kwargs)

    counter = FlopCounterMode(display=False,
                              custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flop})
    F.scaled_dot_product_attention = torch.nn.functional.scaled_dot_product_attention = sdpa
    try:
        # The math kernel decomposes into counted matmuls on every device (CPU's fused kernel has no formula).
        with counter, sdpa_kernel(SDPBackend.MATH):
            yield counter
    finally:
        F.scaled_dot_product_attention = torch.nn.functional.scaled_dot_product_attention = original


# ---- formulas ---------------------------------------------------------------------------------------
def _text(config: UniGenConfig) -> dict:
    return config.backbone_config["text_config"]


def backbone_token_flops(config: UniGenConfig) -> float:
    """Forward FLOPs per token of the text layers' linear maps (q, k, v, o, gate, up, down)."""
    t = _text(config)
    width, inter, layers = t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"]
    kv = t["num_key_value_heads"] * (width // t["num_attention_heads"])
    return 2.0 * layers * (2 * width * width + 2 * width * kv + 3 * width * inter)


def backbone_attention_flops(config: UniGenConfig, queries: int, keys: int) -> float:
    """Forward FLOPs of the text layers' attention for ``queries`` positions over ``keys`` positions."""
    t = _text(config)
    return 4.0 * t["num_hidden_layers"] * t["hidden_size"] * queries * keys


def vision_flops(config: UniGenConfig, grids: list[tuple[int, int, int]], trained: bool = False) -> float:
    """FLOPs of the vision tower on images with patch grids (t, h, w): its forward, or with ``trained`` its
    forward + backward (no input gradient for the pixels). Windowed attention is taken as full windows."""
    v = config.backbone_config["vision_config"]
    width, inter, depth = v["hidden_size"], v["intermediate_size"], v["depth"]
    patch, merge = v["patch_size"], v["spatial_merge_size"]
    out = v.get("out_hidden_size", width)
    patch_in = v.get("in_chans", 3) * v.get("temporal_patch_size", 2) * patch * patch
    window = max(1, v.get("window_size", 112) // patch) ** 2
    full = set(v.get("fullatt_block_indexes", []))
    total = embed = 0.0
    for t, h, w in grids:
        n = t * h * w
        embed += 2.0 * n * patch_in * width
        total += 2.0 * depth * n * (4 * width * width + 3 * width * inter)
        for block in range(depth):
            ctx = n if block in full else min(n, window)
            total += 4.0 * width * n * ctx
        merged, hidden = n // (merge * merge), width * merge * merge
        total += 2.0 * merged * (hidden * hidden + hidden * out)
    return 3.0 * total + 2.0 * embed if trained else total + embed


def connector_slot_flops(config: UniGenConfig) -> float:
    """Forward FLOPs of the connector on one slot (num_queries tokens)."""
    width, q, caption = config.backbone_width, config.num_queries, config.caption_width
    ffn = int(config.connector_mlp_ratio * width)
    per_token = 2.0 * config.connector_layers * (4 * width * width + 3 * width * ffn)
    attention = 4.0 * config.connector_layers * width * q * q
    head = 2.0 * q * (width * caption + caption * caption)
    return q * per_token + attention + head


@lru_cache(maxsize=16)
def _dit_train_flops(dit_config: str, channels: int, side: int, queries: int, caption: int) -> float:
    from diffusers import SanaTransformer2DModel

    with torch.device("meta"):
        dit = SanaTransformer2DModel.from_config(json.loads(dit_config))
        latents = torch.empty(1, channels, side, side)
        conditions = torch.empty(1, queries, caption, requires_grad=True)
        with flop_counter() as counter:
            out = dit(hidden_states=latents, encoder_hidden_states=conditions, timestep=torch.ones(1) * 500,
                      return_dict=False)[0]
            out.float().pow(2).mean().backward()
    return float(counter.get_total_flops())


@lru_cache(maxsize=16)
def _vae_encode_flops(vae_config: str, size: int) -> float:
    from diffusers import AutoencoderDC

    with torch.device("meta"):
        vae = AutoencoderDC.from_config(json.loads(vae_config))
        with flop_counter() as counter, torch.no_grad():
            vae.encode(torch.empty(1, 3, size, size))
    return float(counter.get_total_flops())


def dit_slot_flops(config: UniGenConfig) -> float:
    """Forward + backward FLOPs of the DiT on one target slot (weights and conditions get gradients)."""
    side = config.image_size // config.vae_compression
    return _dit_train_flops(json.dumps(config.dit_config, sort_keys=True), config.latent_channels, side,
                            config.num_queries, config.caption_width)


def vae_encode_flops(config: UniGenConfig) -> float:
    """Forward FLOPs of the DC-AE encoder on one image_size x image_size target."""
    return _vae_encode_flops(json.dumps(config.vae_config, sort_keys=True), config.image_size)


# ---- a batch ----------------------------------------------------------------------------------------
@dataclass
class StepFlops:
    """Model FLOPs of one training step on one batch, by part."""

    backbone: float
    vision: float
    connector: float
    dit: float
    vae: float

    @property
    def total(self) -> float:
        return self.backbone + self.vision + self.connector + self.dit + self.vae


def uses_split(config: UniGenConfig) -> bool:
    """Whether training runs the prompt prefix without autograd (unigen.model.frozen_prefix)."""
    from unigen.model.frozen_prefix import SUPPORTED_ATTENTION

    return (config.frozen_prefix_cache and config.backbone_training == "frozen"
            and config.attn_implementation in SUPPORTED_ATTENTION)


def step_flops(config: UniGenConfig, batch: dict, split: bool | None = None) -> StepFlops:
    """Model FLOPs of a training step (forward + backward, no recomputation) on a processor batch."""
    from unigen.model.frozen_prefix import split_points

    ids = batch["input_ids"]
    rows, length = ids.shape
    split = uses_split(config) if split is None else split
    per_token, mode = backbone_token_flops(config), config.backbone_training
    backward = 2.0 if mode == "full" else 1.0  # trained weights: input and weight gradients
    if split:
        prefix, end = split_points(ids, config.image_gen_start_token_id, config.image_gen_pad_token_id)
        span = end - prefix
        fwd = rows * (prefix * per_token + backbone_attention_flops(config, prefix, prefix)
                      + span * per_token + backbone_attention_flops(config, span, end))
        bwd = rows * (span * per_token + 2.0 * backbone_attention_flops(config, span, end))
    else:
        fwd = rows * (length * per_token + backbone_attention_flops(config, length, length))
        bwd = rows * (backward * length * per_token + 2.0 * backbone_attention_flops(config, length, length))
    grids = batch.get("image_grid_thw")
    vision = (vision_flops(config, [tuple(int(x) for x in g) for g in grids.tolist()], trained=mode == "full")
              if grids is not None else 0.0)
    has_target = batch.get("gen_slot_has_target")
    targets = int(has_target.sum()) if has_target is not None else 0
    online = batch.get("gen_pixel_values") is not None and batch.get("gen_latents") is None
    return StepFlops(backbone=fwd + bwd, vision=vision, connector=3.0 * targets * connector_slot_flops(config),
                     dit=targets * dit_slot_flops(config), vae=targets * vae_encode_flops(config) if online else 0.0)
