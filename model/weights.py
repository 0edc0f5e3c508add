"""What a UniGen checkpoint folder holds, and loading it back.

``model.safetensors`` keeps every trainable parameter, plus everything of the components built at random
(no source). Frozen weights of a component that came from a source (e.g. the frozen Qwen backbone, the
DC-AE) are not copied: ``config.json`` names the source and from_pretrained loads them from it again. Tied
tensors are stored once. This is UniGenModel's own folder; an export (UniGenPipeline.save_pretrained) stores
every part whole in the ecosystem's layouts (unigen.model.export_layout), its files finished by
``finish_safetensors`` as this one is.
"""
from __future__ import annotations

import json
import os
import secrets
import struct

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
    """Write model.safetensors into ``directory``; returns its path. Equal tensors give equal bytes (the
    export's sha256, which lineage records, then says something about its content), and the file has the
    mode a plain ``open()`` gives (0o666 less the umask), not safetensors' 0600, so colleagues can read it."""
    from safetensors.torch import save_file

    path = os.path.join(directory, WEIGHTS_FILE)
    save_file(checkpoint_state(model), path, metadata={"format": "pt", "unigen": "1"})
    finish_safetensors(path)
    return path


def finish_safetensors(path: str | os.PathLike) -> None:
    """What every safetensors file unigen writes gets, whichever library wrote it: the canonical header
    (equal tensors, equal bytes) and the umask's mode instead of safetensors' 0600."""
    _canonical_header(os.fspath(path))
    os.chmod(path, _umask_mode(os.path.dirname(os.path.abspath(path))))


def _canonical_header(path: str) -> None:
    """Rewrite the safetensors header with its keys sorted, in place and at the same length. The library
    writes the header's maps (tensors, ``__metadata__``) in an order that changes from process to process,
    so two saves of the same tensors differed as files. Offsets are relative to the end of the header,
    and sorted compact JSON is never longer than the library's compact JSON of the same content: padding
    with spaces (as the library pads to 8 bytes) keeps every byte after the header where it was."""
    with open(path, "r+b") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        if len(text) > length:
            raise RuntimeError(f"{path}: canonical safetensors header longer than the written one")
        f.seek(8)
        f.write(text.ljust(length, b" "))


def _umask_mode(directory: str | os.PathLike) -> int:
    """0o666 less the process umask, read from a file created the way open() creates one (reading the
    umask with os.umask would change it for every thread for a moment)."""
    probe = os.path.join(directory, f".mode-probe-{secrets.token_hex(6)}")
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        return os.fstat(fd).st_mode & 0o777
    finally:
        os.close(fd)
        os.unlink(probe)


def load_weights(model: nn.Module, directory: str | os.PathLike) -> None:
    """Load model.safetensors, checking that nothing it should have held is missing."""
    from safetensors.torch import load_file

    path = os.path.join(directory, WEIGHTS_FILE)
    if not os.path.exists(path):
        hint = ("an export (model_index.json): load it with UniGenPipeline.from_pretrained" if
                os.path.exists(os.path.join(directory, "model_index.json")) else
                "not a folder written by save_pretrained")
        raise ValueError(f"{os.fspath(directory)}: no {WEIGHTS_FILE}; {hint}")
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
