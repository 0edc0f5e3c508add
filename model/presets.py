"""Component configurations of the shipped presets, as plain data (no torch).

Each preset names its pretrained sources and carries the full shape-relevant configuration of every
component, so ``UniGenConfig.parameter_counts()`` and ``unigen validate`` can size a model without
downloading anything. When a source is loaded, the source's own config wins and the model checks that
the widths the glue depends on (backbone width, caption width, latent channels) agree with these.

The real configurations are those published with the checkpoints:
- Qwen/Qwen2.5-VL-3B-Instruct and Qwen/Qwen2.5-VL-7B-Instruct ``config.json``;
- Efficient-Large-Model/Sana_1600M_512px_diffusers ``transformer/config.json`` (diffusers'
  scripts/convert_sana_to_diffusers.py, model type SanaMS_1600M_P1_D20 at 512 px) and ``vae/config.json``
  (DC-AE f32c32, scaling factor 0.41407).
"""
from __future__ import annotations

import copy
from typing import Any

# Qwen's special tokens in Qwen's order (ids 151643.. in the real vocabulary). The tiny tokenizer
# appends them in the same order after its BPE vocabulary, then our three slot tokens.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)
QWEN_FIRST_SPECIAL_ID = 151643

_QWEN_VISION = {
    "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "in_chans": 3,
    "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2, "hidden_act": "silu",
}

_QWEN_TOKEN_IDS = {
    "bos_token_id": 151643, "eos_token_id": 151645, "vision_start_token_id": 151652,
    "vision_end_token_id": 151653, "image_token_id": 151655, "video_token_id": 151656,
}


def _qwen(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int,
          tie: bool) -> dict[str, Any]:
    text = {
        "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": intermediate,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "hidden_act": "silu", "max_position_embeddings": 128000, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "tie_word_embeddings": tie, "bos_token_id": 151643, "eos_token_id": 151645,
    }
    return {"text_config": text, "vision_config": dict(_QWEN_VISION, out_hidden_size=hidden),
            "tie_word_embeddings": tie, **_QWEN_TOKEN_IDS}


# Sana 1600M at 512 px: 70 heads x 32 (width 2240), 20 layers, caption width 2304 (Gemma-2 2B),
# latent 32 x 16 x 16 for a 512 px image.
SANA_1600M_512 = {
    "in_channels": 32, "out_channels": 32, "num_attention_heads": 70, "attention_head_dim": 32,
    "num_layers": 20, "num_cross_attention_heads": 20, "cross_attention_head_dim": 112,
    "cross_attention_dim": 2240, "caption_channels": 2304, "mlp_ratio": 2.5, "attention_bias": False,
    "sample_size": 16, "patch_size": 1, "norm_elementwise_affine": False, "norm_eps": 1e-6,
    "interpolation_scale": None, "guidance_embeds": False, "qk_norm": None,
}

DCAE_F32C32 = {
    "in_channels": 3, "latent_channels": 32, "attention_head_dim": 32,
    "encoder_block_types": ["ResBlock", "ResBlock", "ResBlock",
                            "EfficientViTBlock", "EfficientViTBlock", "EfficientViTBlock"],
    "decoder_block_types": ["ResBlock", "ResBlock", "ResBlock",
                            "EfficientViTBlock", "EfficientViTBlock", "EfficientViTBlock"],
    "encoder_block_out_channels": [128, 256, 512, 512, 1024, 1024],
    "decoder_block_out_channels": [128, 256, 512, 512, 1024, 1024],
    "encoder_layers_per_block": [2, 2, 2, 3, 3, 3],
    "decoder_layers_per_block": [3, 3, 3, 3, 3, 3],
    "encoder_qkv_multiscales": [[], [], [], [5], [5], [5]],
    "decoder_qkv_multiscales": [[], [], [], [5], [5], [5]],
    "upsample_block_type": "interpolate", "downsample_block_type": "Conv",
    "decoder_norm_types": "rms_norm", "decoder_act_fns": "silu",
    "encoder_out_shortcut": True, "decoder_in_shortcut": True, "decoder_conv_act_fn": "relu",
    "scaling_factor": 0.41407,
}

# The tiny preset: sizes from STACK.md (a Qwen2.5-VL that runs at 32 wide) and from diffusers' own Sana
# tests. Its vocabulary is the committed tiny tokenizer (model/assets/tiny_tokenizer): 384 BPE
# tokens, then Qwen's 22 specials (ids 384..405), then the three slot tokens (406..408).
TINY_VOCAB_BPE = 384
_TINY_SPECIAL = {tok: TINY_VOCAB_BPE + i for i, tok in enumerate(QWEN_SPECIAL_TOKENS)}
TINY_SLOT_TOKEN_IDS = (TINY_VOCAB_BPE + 22, TINY_VOCAB_BPE + 23, TINY_VOCAB_BPE + 24)

TINY_BACKBONE = {
    "text_config": {
        "vocab_size": 416, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "hidden_act": "silu",
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}, "tie_word_embeddings": True,
        "bos_token_id": _TINY_SPECIAL["<|endoftext|>"], "eos_token_id": _TINY_SPECIAL["<|im_end|>"],
        "pad_token_id": _TINY_SPECIAL["<|endoftext|>"],
    },
    "vision_config": {
        "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "in_chans": 3,
        "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56,
        "fullatt_block_indexes": [1], "tokens_per_second": 2, "hidden_act": "silu", "out_hidden_size": 32,
    },
    "tie_word_embeddings": True,
    "bos_token_id": _TINY_SPECIAL["<|endoftext|>"], "eos_token_id": _TINY_SPECIAL["<|im_end|>"],
    "vision_start_token_id": _TINY_SPECIAL["<|vision_start|>"],
    "vision_end_token_id": _TINY_SPECIAL["<|vision_end|>"],
    "image_token_id": _TINY_SPECIAL["<|image_pad|>"], "video_token_id": _TINY_SPECIAL["<|video_pad|>"],
}

TINY_DIT = {
    "in_channels": 4, "out_channels": 4, "num_attention_heads": 2, "attention_head_dim": 16,
    "num_layers": 2, "num_cross_attention_heads": 2, "cross_attention_head_dim": 16,
    "cross_attention_dim": 32, "caption_channels": 32, "mlp_ratio": 2.5, "attention_bias": False,
    "sample_size": 8, "patch_size": 1, "norm_elementwise_affine": False, "norm_eps": 1e-6,
    "interpolation_scale": None, "guidance_embeds": False, "qk_norm": None,
}

# f8c4: four stages (three 2x downsamplings), so a 64 px target is a 4 x 8 x 8 latent.
TINY_VAE = {
    "in_channels": 3, "latent_channels": 4, "attention_head_dim": 8,
    "encoder_block_types": ["ResBlock", "ResBlock", "EfficientViTBlock", "EfficientViTBlock"],
    "decoder_block_types": ["ResBlock", "ResBlock", "EfficientViTBlock", "EfficientViTBlock"],
    "encoder_block_out_channels": [8, 16, 16, 16], "decoder_block_out_channels": [8, 16, 16, 16],
    "encoder_layers_per_block": [1, 1, 1, 1], "decoder_layers_per_block": [1, 1, 1, 1],
    "encoder_qkv_multiscales": [[], [], [5], [5]], "decoder_qkv_multiscales": [[], [], [5], [5]],
    "upsample_block_type": "interpolate", "downsample_block_type": "Conv",
    "decoder_norm_types": "rms_norm", "decoder_act_fns": "silu",
    "encoder_out_shortcut": True, "decoder_in_shortcut": True, "decoder_conv_act_fn": "relu",
    "scaling_factor": 0.45,
}

# The tiny world (unigen.model.tinyworld): the smoke and shapes recipes' preset. Its frozen parts are
# pretrained on the shapes world and shipped in the package (assets://tiny-shapes/...), loaded through the
# same from_pretrained code as the real checkpoints; these dicts are what `python -m unigen.model.tinyworld`
# builds them from (and what `unigen validate` sizes the model by). The vocabulary is a 512-token BPE of the
# world's language, Qwen's 22 specials (512..533), the slot tokens (534..536), rounded up to 576 rows.
TINY_SHAPES_VOCAB_BPE = 512
_TS_SPECIAL = {tok: TINY_SHAPES_VOCAB_BPE + i for i, tok in enumerate(QWEN_SPECIAL_TOKENS)}
TINY_SHAPES_SLOT_TOKEN_IDS = (TINY_SHAPES_VOCAB_BPE + 22, TINY_SHAPES_VOCAB_BPE + 23, TINY_SHAPES_VOCAB_BPE + 24)
TINY_SHAPES_BACKBONE = {
    "text_config": {
        "vocab_size": 576, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_act": "silu",
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]}, "tie_word_embeddings": True,
        "bos_token_id": _TS_SPECIAL["<|endoftext|>"], "eos_token_id": _TS_SPECIAL["<|im_end|>"],
        "pad_token_id": _TS_SPECIAL["<|endoftext|>"],
    },
    # A 64 px picture is read at 112 x 112: 8 x 8 patches of 14 px, merged 2 x 2 into 16 tokens.
    "vision_config": {
        "depth": 4, "hidden_size": 128, "intermediate_size": 256, "num_heads": 4, "in_chans": 3,
        "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56,
        "fullatt_block_indexes": [1, 3], "tokens_per_second": 2, "hidden_act": "silu", "out_hidden_size": 128,
    },
    "tie_word_embeddings": True,
    "bos_token_id": _TS_SPECIAL["<|endoftext|>"], "eos_token_id": _TS_SPECIAL["<|im_end|>"],
    "vision_start_token_id": _TS_SPECIAL["<|vision_start|>"], "vision_end_token_id": _TS_SPECIAL["<|vision_end|>"],
    "image_token_id": _TS_SPECIAL["<|image_pad|>"], "video_token_id": _TS_SPECIAL["<|video_pad|>"],
}

# f4c4 DC-AE: a 64 px picture is a 4 x 16 x 16 latent. Measured against f8c16 at the same CPU budget
# (5 minutes, 32 px crops): 31.1 dB and 0.97 of pictures read back right by the shapes detector, against
# 27.6 dB and 0.84 (the f8c4 of the random tiny preset: 23.4 dB, 0.17). Only ResBlocks: a convolutional
# autoencoder trains on crops, four times cheaper than whole pictures.
TINY_SHAPES_VAE = {
    "in_channels": 3, "latent_channels": 4, "attention_head_dim": 8,
    "encoder_block_types": ["ResBlock", "ResBlock", "ResBlock"],
    "decoder_block_types": ["ResBlock", "ResBlock", "ResBlock"],
    "encoder_block_out_channels": [16, 32, 64], "decoder_block_out_channels": [16, 32, 64],
    "encoder_layers_per_block": [1, 1, 2], "decoder_layers_per_block": [1, 1, 2],
    "encoder_qkv_multiscales": [[], [], []], "decoder_qkv_multiscales": [[], [], []],
    "upsample_block_type": "interpolate", "downsample_block_type": "Conv",
    "decoder_norm_types": "rms_norm", "decoder_act_fns": "silu",
    "encoder_out_shortcut": True, "decoder_in_shortcut": True, "decoder_conv_act_fn": "relu",
    "scaling_factor": 1.0,  # the build measures the latents' spread and stores 1 / std
}

# Sana at 2 x 2 patches of the 16 x 16 latent: 64 tokens, as an f8 latent would give, with the finer
# autoencoder's detail. 8 layers, not 4: on single-object prompts, in a plain loop at equal samples (51k), the
# 4-layer DiT drew the asked colour for 0.65 of held-out prompts and this one 0.83; the 4-layer one mostly
# failed by drawing no shape at all (runbooks/evaluation.md).
TINY_SHAPES_DIT = {
    "in_channels": 4, "out_channels": 4, "num_attention_heads": 2, "attention_head_dim": 32,
    "num_layers": 8, "num_cross_attention_heads": 2, "cross_attention_head_dim": 32,
    "cross_attention_dim": 64, "caption_channels": 64, "mlp_ratio": 2.5, "attention_bias": False,
    "sample_size": 16, "patch_size": 2, "norm_elementwise_affine": False, "norm_eps": 1e-6,
    "interpolation_scale": None, "guidance_embeds": False, "qk_norm": None,
}

# The medium preset: random weights like tiny (same tokenizer, slot tokens and VAE) at a few hundred million
# parameters, most of them trained, so host memory per rank shows what partitioned construction under ZeRO-3
# saves (bench/host_memory.py); still built on a CPU in seconds. Backbone 1024 wide, 8 layers (frozen);
# connector 4 layers at 1024; Sana 16 heads x 64 = 1024 wide, 12 layers.
MEDIUM_BACKBONE = copy.deepcopy(TINY_BACKBONE)
MEDIUM_BACKBONE["text_config"].update({
    "hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 8, "num_attention_heads": 16,
    "num_key_value_heads": 2, "rope_scaling": {"type": "mrope", "mrope_section": [8, 12, 12]},
})
MEDIUM_BACKBONE["vision_config"].update({"hidden_size": 128, "intermediate_size": 256, "out_hidden_size": 1024})
MEDIUM_DIT = dict(TINY_DIT, num_attention_heads=16, attention_head_dim=64, num_layers=12,
                  num_cross_attention_heads=16, cross_attention_head_dim=64, cross_attention_dim=1024,
                  caption_channels=1024)

# Pinned hub revisions (commit shas): `unigen prefetch` caches exactly these files and an offline job loads
# exactly them, whatever the repositories' main branches do later. Each sha is the snapshot folder name
# the hub's cache gives these repositories (models--<org>--<name>/snapshots/<sha>).
QWEN_2_5_VL_3B_REVISION = "66285546d2b821cf421d4f5eb2576359d3770cd3"
QWEN_2_5_VL_7B_REVISION = "cc594898137f460bfe9f0759e9844b3ce807cfb5"
SANA_1600M_512_REVISION = "e58e81ec2dc4faf305122872313884df3afeffa8"

_REAL_COMMON: dict[str, Any] = {
    "decoder_source": "Efficient-Large-Model/Sana_1600M_512px_diffusers",
    "decoder_revision": SANA_1600M_512_REVISION,
    "image_gen_start_token_id": 151665, "image_gen_pad_token_id": 151666, "image_gen_end_token_id": 151667,
    "num_queries": 256, "connector_layers": 24, "image_size": 512,
    "input_min_pixels": 56 * 56, "input_max_pixels": 512 * 512, "max_length": 4096,
}

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "backbone_source": None, "backbone_config": TINY_BACKBONE,
        "decoder_source": None, "dit_config": TINY_DIT, "vae_config": TINY_VAE,
        "tokenizer_source": None,
        "image_gen_start_token_id": TINY_SLOT_TOKEN_IDS[0],
        "image_gen_pad_token_id": TINY_SLOT_TOKEN_IDS[1],
        "image_gen_end_token_id": TINY_SLOT_TOKEN_IDS[2],
        # 16 queries and 2 connector layers keep a CPU step far below the smoke budget; the
        # mechanics (scatter, slot gather, per-slot conditioning) are the same as at 256 x 24.
        "num_queries": 16, "connector_layers": 2, "connector_head_dim": 16, "image_size": 64,
        # One 56 x 56 input image = a 4 x 4 patch grid = 4 merged tokens.
        "input_min_pixels": 56 * 56, "input_max_pixels": 56 * 56, "max_length": 1024,
        "flow_shift": 3.0,
    },
    "tiny-shapes": {
        "backbone_source": "assets://tiny-shapes/backbone", "backbone_config": TINY_SHAPES_BACKBONE,
        "decoder_source": "assets://tiny-shapes/decoder", "dit_config": TINY_SHAPES_DIT,
        "vae_config": TINY_SHAPES_VAE, "tokenizer_source": None,
        "image_gen_start_token_id": TINY_SHAPES_SLOT_TOKEN_IDS[0],
        "image_gen_pad_token_id": TINY_SHAPES_SLOT_TOKEN_IDS[1],
        "image_gen_end_token_id": TINY_SHAPES_SLOT_TOKEN_IDS[2],
        # 24 queries: the backbone reads a description of up to 22 tokens into them (tinyworld.language).
        "num_queries": 24, "connector_layers": 2, "connector_head_dim": 32, "image_size": 64,
        "input_min_pixels": 112 * 112, "input_max_pixels": 112 * 112, "max_length": 1024,
        "flow_shift": 1.0,
        "timestep_shift": 3.0,  # train more at high noise, where the shape and its colour are decided
        # The 16 vision tokens of a 64 px input cannot carry its layout to the DiT; the source latent does.
        # Measured from scratch, 400 steps of depth/normal/edit: depth delta1 0.25 -> 0.41, normals within
        # 11.25 deg 0.17 -> 0.48 (runbooks/evaluation.md). Text-to-image slots get zeros: unchanged.
        "image_latent_conditioning": True,
    },
    "unigen-3b": {
        **_REAL_COMMON,
        "backbone_source": "Qwen/Qwen2.5-VL-3B-Instruct",
        "backbone_revision": QWEN_2_5_VL_3B_REVISION,
        "backbone_config": _qwen(2048, 11008, 36, 16, 2, 151936, tie=True),
        "dit_config": SANA_1600M_512, "vae_config": DCAE_F32C32,
    },
    "unigen-7b": {
        **_REAL_COMMON,
        "backbone_source": "Qwen/Qwen2.5-VL-7B-Instruct",
        "backbone_revision": QWEN_2_5_VL_7B_REVISION,
        "backbone_config": _qwen(3584, 18944, 28, 28, 4, 152064, tie=False),
        "dit_config": SANA_1600M_512, "vae_config": DCAE_F32C32,
    },
    "medium": {
        "backbone_source": None, "backbone_config": MEDIUM_BACKBONE,
        "decoder_source": None, "dit_config": MEDIUM_DIT, "vae_config": TINY_VAE,
        "tokenizer_source": None,
        "image_gen_start_token_id": TINY_SLOT_TOKEN_IDS[0],
        "image_gen_pad_token_id": TINY_SLOT_TOKEN_IDS[1],
        "image_gen_end_token_id": TINY_SLOT_TOKEN_IDS[2],
        "num_queries": 16, "connector_layers": 4, "connector_head_dim": 64, "image_size": 64,
        "input_min_pixels": 56 * 56, "input_max_pixels": 56 * 56, "max_length": 1024,
        "flow_shift": 3.0,
    },
}

PRESET_NAMES = tuple(PRESETS)


def preset_fields(name: str) -> dict[str, Any]:
    """A deep copy of the preset's fields (callers may mutate it)."""
    return copy.deepcopy(PRESETS[name])
