"""Building the pretrained components: Qwen2.5-VL backbone, Sana DiT, DC-AE (random or from a source).

A source is a hub id or a local folder in the hub layout: the Qwen folder (config.json + safetensors),
the Sana diffusers folder with ``transformer/`` and ``vae/`` subfolders. Random components are built from
the config dicts. The dtype is applied the way that actually works for each library (STACK.md):
transformers takes ``dtype=``; diffusers' ``from_pretrained`` takes ``torch_dtype=`` while its
``from_config(..., torch_dtype=)`` silently stays float32, so random diffusers modules are cast with
``.to(dtype)`` instead (and the constructor never sees a dtype argument).
"""
from __future__ import annotations

from typing import Any

import torch

from unigen.model.config import UniGenConfig
from unigen.model.hub import resolve_source

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def torch_dtype(config: UniGenConfig) -> torch.dtype:
    """The parameter dtype the config asks for."""
    return DTYPES[config.dtype]


def frozen_torch_dtype(config: UniGenConfig) -> torch.dtype:
    """The parameter dtype of the frozen parts (frozen_dtype, or dtype when unset)."""
    return DTYPES[config.frozen_dtype or config.dtype]


def build_backbone(config: UniGenConfig):
    """Qwen2_5_VLForConditionalGeneration from backbone_source or, when None, random from backbone_config."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    # Only a wholly frozen backbone takes frozen_dtype: LoRA and full training update it (or adapters on it).
    dtype = frozen_torch_dtype(config) if config.backbone_training == "frozen" else torch_dtype(config)
    source = resolve_source(config.backbone_source)
    qwen_config = Qwen2_5_VLConfig.from_pretrained(source, revision=config.backbone_revision) if source \
        else Qwen2_5_VLConfig(**config.backbone_config)
    # Checked before any weight is read: a mismatch fails in seconds, not after loading gigabytes.
    text = qwen_config.text_config
    _check("backbone_source", source, "text hidden_size", text.hidden_size, config.backbone_width)
    _check("backbone_source", source, "vocab_size", text.vocab_size,
           config.backbone_config["text_config"]["vocab_size"])
    if source:
        return Qwen2_5_VLForConditionalGeneration.from_pretrained(
            source, revision=config.backbone_revision, dtype=dtype, attn_implementation=config.attn_implementation)
    return Qwen2_5_VLForConditionalGeneration._from_config(
        qwen_config, dtype=dtype, attn_implementation=config.attn_implementation)


def build_dit(config: UniGenConfig):
    """SanaTransformer2DModel from decoder_source/transformer or random from dit_config."""
    from diffusers import SanaTransformer2DModel

    source = resolve_source(config.decoder_source)
    dit_settings(config, source)  # checked before any weight is read
    channels = config.latent_channels
    if source:
        model = SanaTransformer2DModel.from_pretrained(source, subfolder="transformer", revision=config.decoder_revision,
                                                       torch_dtype=torch_dtype(config))
    else:
        model = SanaTransformer2DModel.from_config(config.dit_config)
    if config.image_latent_conditioning and model.config.in_channels == channels:
        widen_dit_input(model, channels)
    return _cast(model, torch_dtype(config))


def dit_settings(config: UniGenConfig, source: str | None) -> dict:
    """The DiT's config (the source's, else dit_config), checked against the widths the glue depends on."""
    from diffusers import SanaTransformer2DModel

    settings = SanaTransformer2DModel.load_config(source, subfolder="transformer", revision=config.decoder_revision) \
        if source else config.dit_config
    _check("decoder_source", source, "transformer caption_channels",
           settings.get("caption_channels", 2304), config.caption_width)
    channels = config.latent_channels
    in_channels = settings.get("in_channels", 32)
    if not (config.image_latent_conditioning and in_channels == 2 * channels):  # else already widened
        _check("decoder_source", source, "transformer in_channels", in_channels, channels)
    return settings


def widen_dit_input(dit: Any, extra: int) -> None:
    """Give the DiT ``extra`` more input channels (the source image latent) with zero weights, so its output
    is unchanged until training uses them (InstructPix2Pix's initialisation). The output keeps its
    channels: out_channels is pinned before in_channels changes, since Sana defaults it to in_channels."""
    from unigen.model.zero_init import gathered

    proj = dit.patch_embed.proj
    wider = torch.nn.Conv2d(proj.in_channels + extra, proj.out_channels, proj.kernel_size, proj.stride,
                            proj.padding, bias=proj.bias is not None, device=proj.weight.device,
                            dtype=proj.weight.dtype)
    # Under ZeRO-3 construction (unigen.model.zero_init) both convolutions are partitioned: gathered here.
    with gathered([*proj.parameters(), *wider.parameters()]), torch.no_grad():
        wider.weight.zero_()
        wider.weight[:, :proj.in_channels].copy_(proj.weight)
        if proj.bias is not None:
            wider.bias.copy_(proj.bias)
    dit.patch_embed.proj = wider
    out_channels = dit.config.out_channels or dit.config.in_channels
    dit.register_to_config(in_channels=proj.in_channels + extra, out_channels=out_channels)


def build_vae(config: UniGenConfig):
    """AutoencoderDC from decoder_source/vae or random from vae_config; frozen and in eval mode."""
    from diffusers import AutoencoderDC

    source = resolve_source(config.decoder_source)
    settings = AutoencoderDC.load_config(source, subfolder="vae", revision=config.decoder_revision) if source \
        else config.vae_config
    _check("decoder_source", source, "vae latent_channels", settings.get("latent_channels", 32),
           config.latent_channels)
    stages = len(settings.get("encoder_block_out_channels", (128, 256, 512, 512, 1024, 1024)))
    _check("decoder_source", source, "vae compression", 2 ** (stages - 1), config.vae_compression)
    dtype = frozen_torch_dtype(config)
    if source:
        model = AutoencoderDC.from_pretrained(source, subfolder="vae", revision=config.decoder_revision,
                                             torch_dtype=dtype)
    else:
        model = AutoencoderDC.from_config(config.vae_config)
    return _cast(model, dtype).eval().requires_grad_(False)


def widen_dit_input_state(state: dict, model: Any, prefix: str = "dit.") -> dict:
    """A state dict of a model without image_latent_conditioning made loadable into ``model`` with it: the DiT's
    input weights get zero columns for the source channels, as widen_dit_input gives a pretrained DiT (so a
    stage 2 may switch the setting on over a stage-1 model trained without it)."""
    from unigen.model.zero_init import full_shape

    key = prefix + "patch_embed.proj.weight"
    mine = dict(model.named_parameters()).get(key)
    theirs = state.get(key)
    shape = None if mine is None else full_shape(mine)  # also while ZeRO-3 holds it partitioned
    if shape is None or theirs is None or theirs.shape[1] >= shape[1] or theirs.shape[0] != shape[0]:
        return state
    wider = torch.zeros(shape, dtype=theirs.dtype)
    wider[:, :theirs.shape[1]] = theirs
    return {**state, key: wider}


def inject_lora(backbone: Any, config: UniGenConfig) -> None:
    """peft LoRA adapters on the language model's linears named in lora_target_modules (in place)."""
    from peft import LoraConfig, inject_adapter_in_model

    names = "|".join(config.lora_target_modules)
    # A regex target keeps adapters off the vision tower, whose MLP reuses the names gate/up/down_proj.
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=rf".*language_model\.layers\.\d+\..*\.({names})")
    inject_adapter_in_model(lora, backbone)
    backbone.to(torch_dtype(config))


def enable_backbone_checkpointing(backbone: Any) -> None:
    """Activation checkpointing of the Qwen layers (new name in transformers >= 5.2x, old one before)."""
    kwargs = {"use_reentrant": False}
    if hasattr(backbone, "activation_checkpointing_enable"):
        backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def disable_backbone_checkpointing(backbone: Any) -> None:
    """Undo enable_backbone_checkpointing."""
    if hasattr(backbone, "activation_checkpointing_disable"):
        backbone.activation_checkpointing_disable()
    else:
        backbone.gradient_checkpointing_disable()


def refuse_xformers(*_: Any, **__: Any) -> None:
    """Stand-in for enable_xformers_memory_efficient_attention on Sana: always refuses, saying why."""
    raise ValueError("xformers attention is refused for Sana: diffusers' xformers switch replaces Sana's "
                     "LINEAR self-attention with softmax attention, a different function from the one the "
                     "pretrained weights compute. Keep the default (SDPA for cross-attention, linear "
                     "self-attention).")


def cast_module(module: Any, dtype: torch.dtype) -> Any:
    """``module.to(dtype)``, except for a module built partitioned under ZeRO-3: zero.Init created its
    parameters in the engine's dtype, and .to() would cast only the empty local placeholders."""
    from unigen.model.zero_init import is_partitioned

    if any(is_partitioned(p) for p in module.parameters()):
        return module
    return module.to(dtype)


def _cast(model: Any, dtype: torch.dtype) -> Any:
    from unigen.model.zero_init import is_partitioned

    if model.dtype == dtype or any(is_partitioned(p) for p in model.parameters()):
        return model  # a partitioned model: see cast_module
    if getattr(model, "_keep_in_fp32_modules", None):
        return model.to(dtype)  # diffusers' own .to() honours fp32-pinned modules
    # None pinned: a plain cast, without diffusers' warning that lists an empty set of pinned modules.
    return torch.nn.Module.to(model, dtype)


def _check(field: str, source: str | None, what: str, got: int, expected: int) -> None:
    if got != expected:
        origin = f"{field}={source!r}" if source else "the config dicts"
        raise ValueError(f"{origin}: {what} is {got} but the UniGenConfig expects {expected}; use a preset "
                         "whose component configs match the checkpoint, or edit the config dicts")
