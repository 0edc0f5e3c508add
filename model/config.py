"""UniGenConfig: one typed configuration for the whole model, and the presets by name.

Torch-free on purpose: ``unigen validate`` and the recipe validator import this module to check a
recipe and estimate memory without loading torch, transformers or diffusers.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from unigen.model.presets import PRESET_NAMES, preset_fields

BACKBONE_TRAINING = ("frozen", "lora", "full")
DTYPES = ("float32", "bfloat16")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
TIMESTEP_SAMPLING = ("logit_normal", "uniform")
CHECKPOINT_PARTS = ("backbone", "connector", "dit")
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

_XFORMERS_REFUSAL = (
    "attn_implementation='xformers' is refused: diffusers' xformers switch replaces Sana's LINEAR "
    "self-attention with softmax attention, a different function from the one the pretrained Sana "
    "weights compute. Use 'sdpa' (default)."
)


@dataclass
class UniGenConfig:
    """Configuration of a UniGen model: Qwen2.5-VL backbone + query slots + connector + Sana + DC-AE.

    Component configurations are plain dicts (the constructor arguments of ``Qwen2_5_VLConfig``,
    ``SanaTransformer2DModel`` and ``AutoencoderDC``). A ``*_source`` names a hub id or a local folder in
    the hub layout to load pretrained weights from; None means random initialisation from the dict.
    """

    preset: str = "custom"
    """Name of the preset this config came from (informational)."""

    # ---- components -------------------------------------------------------------------------
    backbone_source: str | None = None
    """Qwen2.5-VL checkpoint: hub id (e.g. Qwen/Qwen2.5-VL-3B-Instruct) or local folder; None = random."""
    backbone_config: dict = field(default_factory=dict)
    """Qwen2_5_VLConfig arguments (text_config, vision_config, token ids)."""
    decoder_source: str | None = None
    """Sana diffusers checkpoint with transformer/ and vae/ subfolders (hub id or folder); None = random."""
    dit_config: dict = field(default_factory=dict)
    """SanaTransformer2DModel arguments."""
    vae_config: dict = field(default_factory=dict)
    """AutoencoderDC arguments (scaling_factor included)."""
    tokenizer_source: str | None = None
    """Tokenizer + image processor folder; None = backbone_source, or the bundled tiny tokenizer."""
    backbone_revision: str | None = None
    """Hub revision of backbone_source (a commit sha pins the exact files `unigen prefetch` caches and an
    offline job loads); None = the hub's main. Ignored for a local folder."""
    decoder_revision: str | None = None
    """Hub revision of decoder_source (as backbone_revision)."""
    tokenizer_revision: str | None = None
    """Hub revision of tokenizer_source; with tokenizer_source None the tokenizer is backbone_source's at
    backbone_revision."""

    # ---- slot tokens (added to the tokenizer; ids must match it) -----------------------------
    image_gen_start_token_id: int = 151665
    """Id of <|image_gen_start|>."""
    image_gen_pad_token_id: int = 151666
    """Id of <|image_gen_pad|> (each slot holds num_queries of them; their embeddings are the queries)."""
    image_gen_end_token_id: int = 151667
    """Id of <|image_gen_end|>."""

    # ---- slots and connector -----------------------------------------------------------------
    num_queries: int = 256
    """Learnable query tokens per image_gen slot."""
    connector_layers: int = 24
    """Bidirectional transformer layers of the connector (at the backbone width)."""
    connector_head_dim: int = 64
    """Head size of the connector's attention (heads = backbone width / head size)."""
    connector_mlp_ratio: float = 4.0
    """SwiGLU hidden size of the connector as a multiple of the backbone width."""

    # ---- images ------------------------------------------------------------------------------
    image_size: int = 512
    """Side in pixels of generated / target images (must be a multiple of the VAE's compression)."""
    input_min_pixels: int = 56 * 56
    """Smallest pixel count an input image is resized to (Qwen2-VL image processor)."""
    input_max_pixels: int = 512 * 512
    """Largest pixel count an input image is resized to (bounds its number of tokens)."""

    # ---- training ----------------------------------------------------------------------------
    backbone_training: str = "frozen"
    """'frozen' (default), 'lora' (peft adapters on the language model) or 'full' (whole backbone)."""
    lora_rank: int = 16
    """LoRA rank (backbone_training='lora')."""
    lora_alpha: int = 32
    """LoRA alpha (backbone_training='lora')."""
    lora_dropout: float = 0.0
    """LoRA dropout (backbone_training='lora')."""
    lora_target_modules: list = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    """Linear layer names of the LANGUAGE model that get adapters (the vision tower never does)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward (of the parts in gradient_checkpointing_parts)."""
    gradient_checkpointing_parts: list = field(default_factory=lambda: list(CHECKPOINT_PARTS))
    """Which parts recompute when gradient_checkpointing is on: any of 'backbone', 'connector', 'dit'
    (recomputing a frozen backbone costs one more forward at the slot positions only)."""
    frozen_prefix_cache: bool = True
    """With a frozen backbone, run the conversation before the first image_gen slot once without autograd
    and let the slots attend to its cached keys/values: the same loss and gradients as a full forward, with
    no backward or recomputation at prompt positions (attn_implementation sdpa or eager; else ignored)."""
    compile_blocks: bool = False
    """torch.compile each connector layer and Sana block (regional compilation: the repeated blocks share
    one graph per shape, compiled during the first steps, minutes at full size). Same loss and gradients;
    faster steps on a GPU where the kernels' launch and memory traffic dominate. Not under DeepSpeed ZeRO-3,
    whose parameter-gathering hooks break the graph at every layer: use zero_stage 0-2."""
    frozen_dtype: str | None = None
    """Parameter dtype of the frozen parts (a frozen backbone, the DC-AE): 'bfloat16' halves their memory
    and, under autocast, the per-forward weight casts; None = dtype. Trainable parts keep dtype."""
    dtype: str = "float32"
    """Parameter dtype: 'float32' or 'bfloat16'."""
    autocast: bool = False
    """Run forward under bf16 autocast (with float32 parameters: mixed precision)."""
    cfg_drop_text: float = 0.1
    """Probability that a conversation's text items are hidden from its slots (text-only dropout)."""
    cfg_drop_image: float = 0.05
    """Probability that a conversation's input images are hidden from its slots."""
    cfg_drop_both: float = 0.05
    """Probability that both text and input images are hidden (the unconditional branch)."""
    image_latent_conditioning: bool = False
    """Also give the DiT the DC-AE latent of each slot's source image, the last input image the conversation
    shows before the slot, concatenated to its noisy latent along channels (InstructPix2Pix, Marigold):
    edits and dense maps then keep the input's layout, which the backbone's few vision tokens cannot
    carry. Zeros where a slot has no source or CFG hides the images. A pretrained DiT gets zero-initialised
    input weights for the new channels, so it starts as the text-to-image model it was."""
    timestep_sampling: str = "logit_normal"
    """Training flow time s: 'logit_normal' (sigmoid of N(0,1), Sana/SD3) or 'uniform'."""
    timestep_shift: float = 1.0
    """Training time shift: each sampled s becomes k s / (1 + (k-1) s), as SD3's training shifts its
    logit-normal times by the scheduler's shift. k > 1 trains more at high noise, where a picture's layout
    (is there a shape, where, which colour) is decided: on the tiny-shapes world k = 3 raised the
    text-to-image colour accuracy from 0.80 to 0.88 at equal samples (runbooks/evaluation.md)."""
    flow_shift: float = 3.0
    """Inference time shift s' = k s / (1 + (k-1) s); 3.0 is what diffusers uses for Sana 512/1024."""

    # ---- sequences ---------------------------------------------------------------------------
    max_length: int = 4096
    """Longest conversation in tokens after expansion; longer ones are a ValueError, never truncated."""
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    """System prompt rendered when a conversation does not start with a system message."""
    attn_implementation: str = "sdpa"
    """Backbone attention: 'sdpa' (default), 'eager' or 'flash_attention_2'."""

    def __post_init__(self) -> None:
        self.validate()

    # ---- validation --------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise one ValueError listing every invalid field with the fix."""
        errors = []

        def choice(name: str, allowed: tuple) -> None:
            value = getattr(self, name)
            if value not in allowed:
                errors.append(f"{name}={value!r}: choose one of {list(allowed)}")

        def positive(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                errors.append(f"{name}={value!r}: must be a positive integer")

        if self.attn_implementation == "xformers":
            errors.append(_XFORMERS_REFUSAL)
        else:
            choice("attn_implementation", ATTN_IMPLEMENTATIONS)
        choice("backbone_training", BACKBONE_TRAINING)
        choice("dtype", DTYPES)
        if self.frozen_dtype is not None:
            choice("frozen_dtype", DTYPES)
        parts = self.gradient_checkpointing_parts
        if not isinstance(parts, (list, tuple)) or any(p not in CHECKPOINT_PARTS for p in parts):
            errors.append(f"gradient_checkpointing_parts={parts!r}: choose a list of {list(CHECKPOINT_PARTS)}")
        for name in ("frozen_prefix_cache", "compile_blocks", "gradient_checkpointing", "autocast",
                     "image_latent_conditioning"):
            if not isinstance(getattr(self, name), bool):
                errors.append(f"{name}={getattr(self, name)!r}: must be true or false")
        choice("timestep_sampling", TIMESTEP_SAMPLING)
        for name in ("backbone_revision", "decoder_revision", "tokenizer_revision"):
            value = getattr(self, name)  # goes into hub URLs and cache folder names: one word
            if value is not None and (not isinstance(value, str) or not value or value != value.split()[0]):
                errors.append(f"{name}={value!r}: must be a hub revision (a commit sha, branch or tag) or null")
        for name in ("num_queries", "connector_layers", "connector_head_dim", "image_size",
                     "input_min_pixels", "input_max_pixels", "max_length", "lora_rank", "lora_alpha"):
            positive(name)
        for name in ("cfg_drop_text", "cfg_drop_image", "cfg_drop_both", "lora_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                errors.append(f"{name}={value!r}: must be a probability in [0, 1]")
        drops = [getattr(self, n) for n in ("cfg_drop_text", "cfg_drop_image", "cfg_drop_both")]
        if all(isinstance(d, (int, float)) for d in drops) and sum(drops) > 1.0:
            errors.append(f"cfg_drop_text + cfg_drop_image + cfg_drop_both = {sum(drops)}: must be <= 1")
        for name in ("flow_shift", "timestep_shift"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                errors.append(f"{name}={value!r}: must be > 0")
        if not isinstance(self.connector_mlp_ratio, (int, float)) or self.connector_mlp_ratio <= 0:
            errors.append(f"connector_mlp_ratio={self.connector_mlp_ratio!r}: must be > 0")
        if (isinstance(self.input_min_pixels, int) and isinstance(self.input_max_pixels, int)
                and self.input_min_pixels > self.input_max_pixels):
            errors.append("input_min_pixels > input_max_pixels: make the minimum <= the maximum")
        bad_targets = [t for t in self.lora_target_modules if t not in DEFAULT_LORA_TARGETS] \
            if isinstance(self.lora_target_modules, (list, tuple)) else [self.lora_target_modules]
        if bad_targets or not self.lora_target_modules:
            errors.append(f"lora_target_modules={self.lora_target_modules!r}: choose a non-empty subset of "
                          f"{DEFAULT_LORA_TARGETS}")
        for name in ("backbone_config", "dit_config", "vae_config"):
            if not isinstance(getattr(self, name), dict):
                errors.append(f"{name}: must be a dict of the component's constructor arguments")
        errors += self._component_errors()
        if errors:
            raise ValueError("invalid UniGenConfig:\n  - " + "\n  - ".join(errors))

    def _component_errors(self) -> list[str]:
        errors = []
        if not all(isinstance(getattr(self, n), dict) for n in ("backbone_config", "dit_config", "vae_config")):
            return errors
        text = self.backbone_config.get("text_config", {})
        width, heads = text.get("hidden_size"), text.get("num_attention_heads")
        if isinstance(width, int) and isinstance(self.connector_head_dim, int) and self.connector_head_dim > 0:
            if width % self.connector_head_dim:
                errors.append(f"connector_head_dim={self.connector_head_dim}: must divide the backbone width "
                              f"{width}")
        if isinstance(heads, int) and isinstance(width, int) and width % heads:
            errors.append(f"backbone_config.text_config: hidden_size {width} not divisible by heads {heads}")
        vocab = text.get("vocab_size")
        if isinstance(vocab, int):
            for name in ("image_gen_start_token_id", "image_gen_pad_token_id", "image_gen_end_token_id"):
                value = getattr(self, name)
                if not isinstance(value, int) or not 0 <= value < vocab:
                    errors.append(f"{name}={value!r}: must be a token id below the backbone vocab_size {vocab}")
        compression = self.vae_compression
        if compression and isinstance(self.image_size, int) and self.image_size % compression:
            errors.append(f"image_size={self.image_size}: must be a multiple of the VAE compression "
                          f"{compression}")
        return errors

    # ---- derived -----------------------------------------------------------------------------
    @property
    def backbone_width(self) -> int:
        """Hidden size of the backbone's language model."""
        return int(self.backbone_config["text_config"]["hidden_size"])

    @property
    def caption_width(self) -> int:
        """Width the connector outputs (Sana's caption_channels)."""
        return int(self.dit_config.get("caption_channels", 2304))

    @property
    def vae_compression(self) -> int:
        """Spatial downsampling factor of the DC-AE (2 ** (stages - 1))."""
        channels = self.vae_config.get("encoder_block_out_channels")
        return 2 ** (len(channels) - 1) if channels else 0

    @property
    def latent_channels(self) -> int:
        """Channels of a DC-AE latent."""
        return int(self.vae_config.get("latent_channels", 32))

    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts per part, computed from the configs alone (no torch).

        Keys: backbone_text, backbone_vision, lora, queries, connector, dit, vae, total, trainable.
        """
        from unigen.model.param_count import count_parameters

        return count_parameters(self)

    # ---- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A deep copy of every field, JSON-serialisable."""
        return copy.deepcopy(dataclasses.asdict(self))

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of every configuration field."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UniGenConfig:
        """Build from a dict; unknown keys are a ValueError listing the valid keys."""
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown UniGenConfig key(s) {unknown}; valid keys: {cls.field_names()}")
        return cls(**copy.deepcopy(data))

    def save_json(self, path: str | os.PathLike) -> None:
        """Write the config as indented JSON."""
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=2, sort_keys=True)
            fh.write("\n")

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> UniGenConfig:
        """Read a config written by save_json (unknown keys are an error naming the file)."""
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        try:
            return cls.from_dict(data)
        except ValueError as err:
            raise ValueError(f"{os.fspath(path)}: {err}") from None


def pretrained_config_path(folder: str | os.PathLike) -> str | None:
    """The file holding the UniGenConfig of a UniGenPipeline.save_pretrained folder: ``unigen/config.json``
    of an export (unigen.model.export_layout), ``config.json`` of the older one-file layout; None when
    neither exists. Torch-free, for recipe validation."""
    for name in (os.path.join("unigen", "config.json"), "config.json"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def load_pretrained_config(folder: str | os.PathLike) -> UniGenConfig:
    """The UniGenConfig of a UniGenPipeline.save_pretrained folder, either layout (errors name the file)."""
    path = pretrained_config_path(folder)
    if path is None:
        raise ValueError(f"{os.fspath(folder)}: no unigen/config.json (an export) or config.json (the older "
                         "layout); give a folder written by UniGenPipeline.save_pretrained or `unigen export`")
    if os.path.basename(os.path.dirname(path)) != "unigen":
        return UniGenConfig.load_json(path)
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data.get("unigen_config"), dict):
        raise ValueError(f"{path}: no 'unigen_config'; not the unigen/ folder of a unigen export")
    try:
        return UniGenConfig.from_dict(data["unigen_config"])
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def get_preset(name: str, **overrides: Any) -> UniGenConfig:
    """The named preset's config with fields overridden.

    Unknown preset -> ValueError listing the presets; unknown override key -> ValueError naming it and
    listing the valid keys.
    """
    if name not in PRESET_NAMES:
        raise ValueError(f"unknown preset {name!r}; valid presets: {list(PRESET_NAMES)}")
    valid = UniGenConfig.field_names()
    for key in overrides:
        if key not in valid:
            raise ValueError(f"unknown override key {key!r} for preset {name!r}; valid keys: {valid}")
    fields = preset_fields(name)
    fields.update(copy.deepcopy(overrides))
    fields.setdefault("preset", name)
    return UniGenConfig(**fields)


__all__ = ["PRESET_NAMES", "UniGenConfig", "get_preset", "DEFAULT_SYSTEM_PROMPT"]
