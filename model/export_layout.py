"""The folder ``UniGenPipeline.save_pretrained`` writes (an export), in the layouts diffusers and
transformers read, and reading it back.

```
model_index.json     diffusers: the pipeline class (pipeline_unigen.UniGenDiffusionPipeline) and components
pipeline_unigen.py   that class, for DiffusionPipeline.from_pretrained(export, trust_remote_code=True)
backbone/            transformers Qwen2_5_VLForConditionalGeneration: config.json (model_type) + model.safetensors
transformer/         diffusers SanaTransformer2DModel: config.json + diffusion_pytorch_model.safetensors
vae/                 diffusers AutoencoderDC: config.json + diffusion_pytorch_model.safetensors
scheduler/           diffusers FlowMatchEulerDiscreteScheduler with the model's flow_shift (what generation uses)
tokenizer/           the tokenizer, its chat template unigen's (AutoTokenizer + apply_chat_template)
image_processor/     Qwen2-VL's image processor config
processor/           AutoProcessor / UniGenProcessor: tokenizer, image processor, chat template, unigen_processor.json
unigen/              unigen's own parts (queries, slot boundaries, connector) as a diffusers model whose
                     config.json holds the whole UniGenConfig (unigen.model.diffusers_pipeline.UniGenParts)
```

Every part is stored whole, also one that came from a pretrained source: each library loads its folder
standalone. A LoRA-trained backbone is stored merged (base + B A), so transformers loads the model that was
trained. The root has no config.json, so a tool that expects one model there (e.g.
``Qwen2_5_VLForConditionalGeneration.from_pretrained(export)``) fails naming the missing file instead of
building a default config. Every safetensors file gets a canonical header and the umask's mode
(unigen.model.weights.finish_safetensors). The older one-file layout (config.json + model.safetensors +
processor files at the root) still loads.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from unigen.model.config import UniGenConfig

log = logging.getLogger("unigen.model")

MODEL_INDEX = "model_index.json"
PIPELINE_MODULE = "pipeline_unigen"
PIPELINE_CLASS = "UniGenDiffusionPipeline"
PARTS = "unigen"
LEGACY_CONFIG, LEGACY_WEIGHTS = "config.json", "model.safetensors"
COMPONENTS = {
    "backbone": ["transformers", "Qwen2_5_VLForConditionalGeneration"],
    "transformer": ["diffusers", "SanaTransformer2DModel"],
    "vae": ["diffusers", "AutoencoderDC"],
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "unigen": ["unigen.model.diffusers_pipeline", "UniGenParts"],
}
_PIPELINE_SHIM = f'''"""unigen's pipeline for diffusers: DiffusionPipeline.from_pretrained(<this folder>, trust_remote_code=True).
Needs the unigen package installed (its UniGenPipeline.from_pretrained reads this folder too)."""
from unigen.model.diffusers_pipeline import {PIPELINE_CLASS}, UniGenParts  # noqa: F401
'''


def layout(directory: str | os.PathLike) -> str:
    """'export' (this module's layout), 'legacy' (config.json + model.safetensors at the root) or 'none'."""
    root = Path(directory)
    if (root / MODEL_INDEX).is_file() and (root / PARTS / "config.json").is_file():
        return "export"
    if (root / LEGACY_CONFIG).is_file() and (root / LEGACY_WEIGHTS).is_file():
        return "legacy"
    return "none"


# ---- writing -------------------------------------------------------------------------------------------
def save_export(model: Any, processor: Any, directory: str | os.PathLike) -> None:
    """Write ``model`` and ``processor`` as an export into ``directory`` (see the module docstring)."""
    import diffusers

    from unigen.model.diffusers_pipeline import UniGenParts
    from unigen.model.flow import make_scheduler
    from unigen.model.weights import finish_safetensors

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    parts = UniGenParts.of(model)  # first: refuses a model with tensors no part stores, before writing
    with _quiet_progress():
        model.backbone.save_pretrained(root / "backbone", state_dict=_backbone_state(model.backbone))
    model.dit.save_pretrained(root / "transformer")
    model.vae.save_pretrained(root / "vae")
    parts.save_pretrained(root / PARTS)
    make_scheduler(model.config.flow_shift).save_pretrained(root / "scheduler")
    processor.save_pretrained(root / "processor")
    processor.save_pretrained(root / "tokenizer", tokenizer_only=True)
    processor.image_processor.save_pretrained(root / "image_processor")
    index = {"_class_name": [PIPELINE_MODULE, PIPELINE_CLASS], "_diffusers_version": diffusers.__version__,
             **COMPONENTS, "tokenizer": ["transformers", _transformers_class(processor.tokenizer)],
             "image_processor": ["transformers", _transformers_class(processor.image_processor)]}
    (root / MODEL_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (root / f"{PIPELINE_MODULE}.py").write_text(_PIPELINE_SHIM, encoding="utf-8")
    for path in sorted(root.rglob("*.safetensors")):
        finish_safetensors(path)


@contextlib.contextmanager
def _quiet_progress():
    """Without transformers' per-file progress bars (on stderr, where ``unigen chat`` and ``generate`` write
    their errors): loading an export is one step of a command, as it was before the export had subfolders."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _transformers_class(obj: Any) -> str:
    """The name under which diffusers finds ``obj``'s class in transformers (model_index.json)."""
    import transformers

    for cls in type(obj).__mro__:
        if getattr(transformers, cls.__name__, None) is cls:
            return cls.__name__
    raise ValueError(f"{type(obj).__name__} is not a transformers class: the export's model_index.json "
                     "cannot name it")


def _backbone_state(backbone: Any) -> dict[str, torch.Tensor] | None:
    """None (transformers saves the module as it is) unless LoRA adapters are injected: then the merged
    weights (base + scale * B A) under the plain Qwen names, without touching the live module."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return None
    layers = {name: m for name, m in backbone.named_modules() if isinstance(m, LoraLayer)}
    if not layers:
        return None
    state = dict(backbone.state_dict())
    for name, layer in layers.items():
        key = f"{name}.base_layer.weight"
        delta = sum(layer.get_delta_weight(a) for a in layer.active_adapters)
        state[key] = (state[key].float() + delta.float()).to(state[key].dtype)
    return {k.replace(".base_layer.", "."): v for k, v in state.items() if ".lora_" not in k}


# ---- reading -------------------------------------------------------------------------------------------
def export_config(directory: str | os.PathLike) -> UniGenConfig:
    """The UniGenConfig an export was written with (its ``unigen/config.json``)."""
    from unigen.model.config import load_pretrained_config

    return load_pretrained_config(directory)


def load_export(directory: str | os.PathLike, **overrides: Any) -> tuple[Any, Any]:
    """(UniGenModel, UniGenProcessor) of an export, either layout; ``overrides`` are config fields (dtype).

    The pretrained components load through the same code as hub sources (the export's backbone/ is the
    backbone source, the export itself the Sana-style decoder source with transformer/ and vae/); the
    model keeps the config's original sources, which say where the weights first came from."""
    from unigen.model.modeling import UniGenModel
    from unigen.model.processor import UniGenProcessor

    root = Path(directory)
    kind = layout(root)
    if kind == "legacy":
        log.info("%s: the one-file layout of older unigen versions; UniGenPipeline.from_pretrained(...)"
                 ".save_pretrained(new_folder) rewrites it in the layout diffusers and transformers read", root)
        return UniGenModel.from_pretrained(root, **overrides), UniGenProcessor.from_pretrained(root)
    if kind == "none":
        raise ValueError(_not_an_export(root))
    config = export_config(root)
    if overrides:
        config = UniGenConfig.from_dict({**config.to_dict(), **overrides})
    local = UniGenConfig.from_dict({**config.to_dict(), "backbone_source": str(root / "backbone"),
                                    "decoder_source": str(root)})
    with _quiet_progress():
        model = UniGenModel(local)
    _load_parts(model, root / PARTS)
    model.config = config
    return model, UniGenProcessor.from_pretrained(root / "processor")


def _load_parts(model: Any, folder: Path) -> None:
    from safetensors.torch import load_file

    from unigen.model.diffusers_pipeline import COMPONENT_PREFIXES

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{folder}: no safetensors file; the export is incomplete, export the run again")
    state = {k: v for f in files for k, v in load_file(f).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    lacking = [k for k in missing if not k.startswith(COMPONENT_PREFIXES)]
    if unexpected or lacking:
        raise ValueError(f"{folder}: {len(unexpected)} tensors the model does not have (e.g. {unexpected[:3]}) and "
                         f"{len(lacking)} it lacks (e.g. {lacking[:3]}); the folder was written by a model with "
                         "a different config")


def _not_an_export(root: Path) -> str:
    if not root.is_dir():
        return f"{root}: no such folder"
    if (root / MODEL_INDEX).is_file():
        return (f"{root}: a diffusers folder without unigen/config.json: not a unigen export (load it with "
                "diffusers, or export a unigen run with `unigen export RUN --out DIR`)")
    found = sorted(p.name for p in root.iterdir())[:10]
    return (f"{root}: not a unigen export: expected {MODEL_INDEX} + {PARTS}/config.json (the export layout) or "
            f"{LEGACY_CONFIG} + {LEGACY_WEIGHTS} (the older one-file layout), found {found}; write one with "
            "UniGenPipeline.save_pretrained or `unigen export RUN --out DIR`")


# ---- assembling already-loaded components (the diffusers pipeline) -------------------------------------
def assemble_pipeline(config: UniGenConfig, *, backbone: Any, transformer: Any, vae: Any, parts: Any,
                      tokenizer: Any, image_processor: Any) -> Any:
    """A UniGenPipeline whose model holds these very modules (nothing loaded or copied again). The model
    is built on the meta device without sources and its components replaced, then set up as
    UniGenModel.__init__ sets up its own (trainable flags, LoRA adapters, xformers refusal, checkpointing)."""
    from unigen.model.modeling import UniGenModel
    from unigen.model.pipeline import UniGenPipeline
    from unigen.model.processor import _SETTINGS, UniGenProcessor

    bare = UniGenConfig.from_dict({**config.to_dict(), "backbone_source": None, "decoder_source": None,
                                   "backbone_training": "frozen", "gradient_checkpointing": False,
                                   "compile_blocks": False})
    with torch.device("meta"):
        model = UniGenModel(bare)
    model.config = config
    model.backbone, model.dit, model.vae = backbone, transformer, vae
    model.queries, model.slot_boundaries, model.connector = parts.queries, parts.slot_boundaries, parts.connector
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ValueError(f"UniGenModel has parts the export does not hold, e.g. {left[:5]}; add them to "
                         "unigen.model.diffusers_pipeline.UniGenParts")
    model.set_up_parts()
    processor = UniGenProcessor(tokenizer, image_processor, **{k: getattr(config, k) for k in _SETTINGS})
    return UniGenPipeline(model.eval(), processor)



def export_tensors(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of an export (either layout) under UniGenModel's state-dict names, read through the same
    loaders as ``UniGenPipeline.from_pretrained``: what tests compare between exports and checkpoints."""
    return dict(load_export(directory)[0].state_dict())
