"""Parameter counts of a UniGenConfig, from the configs alone (no torch, no downloads).

The formulas mirror the module definitions of transformers' Qwen2.5-VL, diffusers' SanaTransformer2DModel
and AutoencoderDC, and our connector (unigen.model.connector). A unit test builds every shipped preset
on torch's meta device and checks these numbers equal the built modules' counts, so a drift in either
side fails loudly. ``unigen validate`` sizes memory from them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from unigen.model.config import UniGenConfig

# Constructor defaults of the diffusers classes for the keys a preset may leave out (a test compares
# them with the installed diffusers' signatures).
SANA_DEFAULTS: dict[str, Any] = {
    "in_channels": 32, "out_channels": 32, "num_attention_heads": 70, "attention_head_dim": 32,
    "num_layers": 20, "num_cross_attention_heads": 20, "cross_attention_head_dim": 112,
    "cross_attention_dim": 2240, "caption_channels": 2304, "mlp_ratio": 2.5, "attention_bias": False,
    "patch_size": 1, "norm_elementwise_affine": False, "guidance_embeds": False, "qk_norm": None,
}
DCAE_DEFAULTS: dict[str, Any] = {
    "in_channels": 3, "latent_channels": 32, "attention_head_dim": 32,
    "encoder_block_types": "ResBlock", "decoder_block_types": "ResBlock",
    "encoder_block_out_channels": (128, 256, 512, 512, 1024, 1024),
    "decoder_block_out_channels": (128, 256, 512, 512, 1024, 1024),
    "encoder_layers_per_block": (2, 2, 2, 3, 3, 3), "decoder_layers_per_block": (3, 3, 3, 3, 3, 3),
    "encoder_qkv_multiscales": ((), (), (), (5,), (5,), (5,)),
    "decoder_qkv_multiscales": ((), (), (), (5,), (5,), (5,)),
    "upsample_block_type": "pixel_shuffle", "downsample_block_type": "pixel_unshuffle",
    "decoder_norm_types": "rms_norm", "decoder_act_fns": "silu",
}
LORA_SHAPES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _conv(n_in: int, n_out: int, kernel: int, bias: bool = True, groups: int = 1) -> int:
    return n_out * (n_in // groups) * kernel * kernel + (n_out if bias else 0)


# ---- Qwen2.5-VL --------------------------------------------------------------------------------
def _text_dims(text: dict) -> tuple[int, int, int, int, int, int]:
    width, heads = text["hidden_size"], text["num_attention_heads"]
    head_dim = text.get("head_dim") or width // heads
    return width, heads, text.get("num_key_value_heads", heads), head_dim, text["intermediate_size"], \
        text["num_hidden_layers"]


def backbone_tied(backbone: dict) -> bool:
    """Whether lm_head shares the input embedding (Qwen2.5-VL-3B does, 7B does not)."""
    text = backbone.get("text_config", {})
    return bool(backbone.get("tie_word_embeddings", text.get("tie_word_embeddings", True)))


def qwen_text_params(backbone: dict) -> int:
    """Language model: embeddings, decoder layers, final norm and lm_head (unless tied)."""
    text = backbone["text_config"]
    width, heads, kv_heads, head_dim, inter, layers = _text_dims(text)
    attn = (_linear(width, heads * head_dim) + 2 * _linear(width, kv_heads * head_dim)
            + _linear(heads * head_dim, width, bias=False))
    mlp = 3 * width * inter
    per_layer = attn + mlp + 2 * width
    embed = text["vocab_size"] * width
    head = 0 if backbone_tied(backbone) else text["vocab_size"] * width
    return embed + layers * per_layer + width + head


def qwen_vision_params(backbone: dict) -> int:
    """Vision tower: patch embedding, blocks and the patch merger."""
    vis = backbone["vision_config"]
    hidden, inter = vis["hidden_size"], vis["intermediate_size"]
    patch = vis.get("patch_size", 14)
    embed = vis.get("in_chans", 3) * vis.get("temporal_patch_size", 2) * patch * patch * hidden
    block = 2 * hidden + _linear(hidden, 3 * hidden) + _linear(hidden, hidden) \
        + 2 * _linear(hidden, inter) + _linear(inter, hidden)
    merged = hidden * vis.get("spatial_merge_size", 2) ** 2
    merger = hidden + _linear(merged, merged) + _linear(merged, vis["out_hidden_size"])
    return embed + vis["depth"] * block + merger


def lora_params(backbone: dict, rank: int, targets: list[str]) -> int:
    """Adapters A (rank x in) and B (out x rank) on the named language-model linears of every layer."""
    width, heads, kv_heads, head_dim, inter, layers = _text_dims(backbone["text_config"])
    shapes = {
        "q_proj": (width, heads * head_dim), "k_proj": (width, kv_heads * head_dim),
        "v_proj": (width, kv_heads * head_dim), "o_proj": (heads * head_dim, width),
        "gate_proj": (width, inter), "up_proj": (width, inter), "down_proj": (inter, width),
    }
    return layers * sum(rank * (shapes[name][0] + shapes[name][1]) for name in targets)


# ---- ours ----------------------------------------------------------------------------------------
def connector_params(width: int, caption: int, layers: int, head_dim: int, mlp_ratio: float) -> int:
    """Bidirectional encoder layers at the backbone width, then Linear-GELU-Linear-RMSNorm."""
    ffn = int(mlp_ratio * width)
    layer = (width + _linear(width, 3 * width) + _linear(width, width, bias=False) + 2 * head_dim
             + width + _linear(width, 2 * ffn, bias=False) + _linear(ffn, width, bias=False))
    head = _linear(width, caption) + _linear(caption, caption) + caption
    return layers * layer + width + head


# ---- Sana ------------------------------------------------------------------------------------------
def sana_params(dit: dict) -> int:
    """SanaTransformer2DModel (qk_norm None or 'rms_norm_across_heads', no guidance embedding)."""
    c = {**SANA_DEFAULTS, **dit}
    if c["guidance_embeds"]:
        raise ValueError("parameter_counts does not model Sana-Sprint's guidance embedding "
                         "(dit_config.guidance_embeds=True)")
    if c["qk_norm"] not in (None, "rms_norm_across_heads"):
        raise ValueError(f"parameter_counts does not model dit_config.qk_norm={c['qk_norm']!r}")
    inner = c["num_attention_heads"] * c["attention_head_dim"]
    cross_inner = c["num_cross_attention_heads"] * c["cross_attention_head_dim"]
    patch, out = c["patch_size"], c["out_channels"] or c["in_channels"]
    qk = c["qk_norm"] is not None
    embed = _conv(c["in_channels"], inner, patch)
    time = _linear(256, inner) + _linear(inner, inner) + _linear(inner, 6 * inner)
    caption = _linear(c["caption_channels"], inner) + _linear(inner, inner) + inner
    self_attn = 3 * _linear(inner, inner, c["attention_bias"]) + _linear(inner, inner) + (2 * inner if qk else 0)
    norm2 = 2 * inner if c["norm_elementwise_affine"] else 0
    cross_attn = (_linear(inner, cross_inner) + 2 * _linear(c["cross_attention_dim"], cross_inner)
                  + _linear(cross_inner, inner) + (2 * cross_inner if qk else 0))
    hidden = int(c["mlp_ratio"] * inner)
    ff = _conv(inner, 2 * hidden, 1) + _conv(2 * hidden, 2 * hidden, 3, groups=2 * hidden) \
        + _conv(hidden, inner, 1, bias=False)
    block = self_attn + norm2 + cross_attn + ff + 6 * inner
    final = 2 * inner + _linear(inner, patch * patch * out)
    return embed + time + caption + c["num_layers"] * block + final


# ---- DC-AE -----------------------------------------------------------------------------------------
def _per_stage(value: Any, n: int) -> list:
    return [value] * n if isinstance(value, str) else list(value)


def _dc_block(kind: str, ch: int, head_dim: int, scales: list) -> int:
    if kind == "ResBlock":
        return _conv(ch, ch, 3) + _conv(ch, ch, 3, bias=False) + 2 * ch
    if kind == "EfficientViTBlock":
        heads = int(ch // head_dim * 1.0)
        inner = heads * head_dim
        attn = 3 * ch * inner + 2 * ch + inner * (1 + len(scales)) * ch
        attn += sum(3 * inner * k * k + 3 * inner * head_dim for k in scales)
        hidden = 4 * ch
        glu = _conv(ch, 2 * hidden, 1) + _conv(2 * hidden, 2 * hidden, 3, groups=2 * hidden) \
            + _conv(hidden, ch, 1, bias=False) + 2 * ch
        return attn + glu
    raise ValueError(f"parameter_counts does not model DC-AE block type {kind!r}")


def dcae_params(vae: dict) -> int:
    """AutoencoderDC: encoder plus decoder."""
    c = {**DCAE_DEFAULTS, **vae}
    head = c["attention_head_dim"]
    return _dc_encoder(c, head) + _dc_decoder(c, head)


def _dc_encoder(c: dict, head: int) -> int:
    chans, layers = list(c["encoder_block_out_channels"]), list(c["encoder_layers_per_block"])
    n = len(chans)
    kinds, scales = _per_stage(c["encoder_block_types"], n), list(c["encoder_qkv_multiscales"])
    unshuffle = c["downsample_block_type"] == "pixel_unshuffle"
    first = chans[0] if layers[0] > 0 else chans[1]
    if layers[0] > 0:
        total = _conv(c["in_channels"], first, 3)
    else:
        total = _conv(c["in_channels"], first // 4 if unshuffle else first, 3)
    for i in range(n):
        total += layers[i] * _dc_block(kinds[i], chans[i], head, list(scales[i]))
        if i < n - 1 and layers[i] > 0:
            nxt = chans[i + 1]
            total += _conv(chans[i], nxt // 4 if unshuffle else nxt, 3)
    return total + _conv(chans[-1], c["latent_channels"], 3)


def _dc_decoder(c: dict, head: int) -> int:
    chans, layers = list(c["decoder_block_out_channels"]), list(c["decoder_layers_per_block"])
    n = len(chans)
    kinds, scales = _per_stage(c["decoder_block_types"], n), list(c["decoder_qkv_multiscales"])
    interpolate = c["upsample_block_type"] == "interpolate"
    total = _conv(c["latent_channels"], chans[-1], 3)
    for i in range(n):
        if i < n - 1 and layers[i] > 0:
            total += _conv(chans[i + 1], chans[i] if interpolate else chans[i] * 4, 3)
        total += layers[i] * _dc_block(kinds[i], chans[i], head, list(scales[i]))
    last = chans[0] if layers[0] > 0 else chans[1]
    out = c["in_channels"]
    total += 2 * last
    total += _conv(last, out if (layers[0] > 0 or interpolate) else out * 4, 3)
    return total


# ---- all together ------------------------------------------------------------------------------------
def _dit_as_built(config: UniGenConfig) -> dict:
    """dit_config with the source-latent channels components.build_dit adds (image_latent_conditioning)."""
    dit = {**SANA_DEFAULTS, **config.dit_config}
    if config.image_latent_conditioning and dit["in_channels"] == config.latent_channels:
        dit = {**dit, "out_channels": dit["out_channels"] or dit["in_channels"],
               "in_channels": 2 * dit["in_channels"]}
    return dit


def count_parameters(config: UniGenConfig) -> dict[str, int]:
    """Counts per part plus total and trainable (given backbone_training)."""
    backbone = config.backbone_config
    width = config.backbone_width
    counts = {
        "backbone_text": qwen_text_params(backbone),
        "backbone_vision": qwen_vision_params(backbone),
        "lora": (lora_params(backbone, config.lora_rank, list(config.lora_target_modules))
                 if config.backbone_training == "lora" else 0),
        # num_queries query embeddings plus the two learned slot-boundary embeddings.
        "queries": (config.num_queries + 2) * width,
        "connector": connector_params(width, config.caption_width, config.connector_layers,
                                      config.connector_head_dim, config.connector_mlp_ratio),
        "dit": sana_params(_dit_as_built(config)),
        "vae": dcae_params(config.vae_config),
    }
    counts["total"] = sum(counts.values())
    trainable = counts["queries"] + counts["connector"] + counts["dit"] + counts["lora"]
    if config.backbone_training == "full":
        trainable += counts["backbone_text"] + counts["backbone_vision"]
    counts["trainable"] = trainable
    return counts


_TABLE_ROWS = (
    ("backbone_text", "Qwen2.5-VL language model (frozen by default)"),
    ("backbone_vision", "Qwen2.5-VL vision tower (frozen by default)"),
    ("backbone", "backbone, text + vision"),
    ("queries", "query slots (num_queries + 2 boundary embeddings) x width"),
    ("connector", "connector (24 layers at the backbone width + projection)"),
    ("dit", "Sana DiT (trained)"),
    ("vae", "DC-AE (frozen)"),
    ("total", "total"),
    ("trainable", "trainable, backbone frozen"),
    ("trainable_lora", "trainable, backbone LoRA (rank 16, attention + MLP)"),
    ("trainable_full", "trainable, backbone fully fine-tuned"),
)


def markdown_table(presets: list[str]) -> str:
    """The parameter-count table of docs/model.md for the named presets (exact counts)."""
    from unigen.model.config import get_preset

    columns = []
    for name in presets:
        counts = dict(get_preset(name).parameter_counts())
        counts["backbone"] = counts["backbone_text"] + counts["backbone_vision"]
        counts["trainable_lora"] = get_preset(name, backbone_training="lora").parameter_counts()["trainable"]
        counts["trainable_full"] = get_preset(name, backbone_training="full").parameter_counts()["trainable"]
        columns.append(counts)
    lines = ["| part | " + " | ".join(presets) + " |", "|---|" + "---:|" * len(presets)]
    for key, label in _TABLE_ROWS:
        lines.append(f"| {label} | " + " | ".join(f"{c[key]:,}" for c in columns) + " |")
    return "\n".join(lines)
