"""What a UniGen checkpoint folder holds, and loading it back.

``model.safetensors`` keeps every trainable parameter, plus everything of the components built at random
(no source). Frozen weights of a component that came from a source (e.g. the frozen Qwen backbone, the
DC-AE) are not copied: ``config.json`` names the source and from_pretrained loads them from it again. Tied
tensors are stored once.
"""
from __future__ import annotations

import os

import torch
from torch import nn

WEIGHTS_FILE = "model.safetensors"


def sourced_prefixes(model: nn.Module) -> tuple[str, ...]:
    """State-dict prefixes of components loaded from a pretrained source."""
    config = model.config
    prefixes = []
    if config.backbone_source:
        prefixes.append("backbone.")
    if config.decoder_source:
        prefixes += ["dit.", "vae."]
    return tuple(prefixes)


def _trainable_names(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}


def checkpoint_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors save_pretrained writes (see module docstring), deduplicated, contiguous, on CPU."""
    sourced, trainable = sourced_prefixes(model), _trainable_names(model)
    out, seen = {}, set()
    for name, tensor in model.state_dict().items():
        if name.startswith(sourced) and name not in trainable:
            continue
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.numel() and key in seen:
            continue
        seen.add(key)
        out[name] = tensor.detach().to("cpu").contiguous()
    return out


def save_weights(model: nn.Module, directory: str | os.PathLike) -> str:
    """Write model.safetensors into ``directory``; returns its path."""
    from safetensors.torch import save_file

    path = os.path.join(directory, WEIGHTS_FILE)
    save_file(checkpoint_state(model), path, metadata={"format": "pt", "unigen": "1"})
    return path


def load_weights(model: nn.Module, directory: str | os.PathLike) -> None:
    """Load model.safetensors, checking that nothing it should have held is missing."""
    from safetensors.torch import load_file

    path = os.path.join(directory, WEIGHTS_FILE)
    if not os.path.exists(path):
        raise ValueError(f"{os.fspath(directory)}: no {WEIGHTS_FILE}; not a folder written by save_pretrained")
    state = load_file(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"{path}: {len(unexpected)} tensors the model does not have, e.g. {unexpected[:5]}; "
                         "the checkpoint was written by a model with a different config")
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded_ids = {id(params[name]) for name in state if name in params}
    sourced, trainable = sourced_prefixes(model), _trainable_names(model)
    lacking = [name for name in missing
               if not (name.startswith(sourced) and name not in trainable)
               and not (name in params and id(params[name]) in loaded_ids)]
    if lacking:
        raise ValueError(f"{path}: {len(lacking)} tensors are missing, e.g. {lacking[:5]}; the checkpoint is "
                         "incomplete or from a model with a different config")
