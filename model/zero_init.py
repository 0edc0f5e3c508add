"""Building UniGenModel under DeepSpeed ZeRO-3 so that no rank ever holds the whole trainable model.

Built the plain way, every rank makes the whole model on the host and DeepSpeed partitions it only in
``deepspeed.initialize``: until then a rank holds the frozen parts plus every trainable parameter in fp32
(unigen-3b: ~20 GB per rank, times the ranks of a node). ``build_partitioned`` instead:

- creates the trainable parts (queries, slot boundaries, connector, Sana DiT) inside
  ``deepspeed.zero.Init``, which partitions each module's parameters as soon as that module's own
  ``__init__`` returns: a rank holds one layer whole for a moment, then only its shard;
- copies pretrained trainable weights (the decoder source's DiT, stage-1 weights: ``load_state``) in module
  by module under ``GatheredParameters(modifier_rank=0)``: rank 0 reads each tensor from the file and
  DeepSpeed broadcasts and re-partitions it, so no rank holds a whole copy;
- builds the frozen parts (backbone, VAE; LoRA adapters, which are small) whole on every rank with
  zero.Init paused, straight in the dtype the engine runs them in (under bf16 DeepSpeed would cast them to
  bf16 anyway; an fp32 copy first would double their host memory). ``deepspeed.initialize`` partitions them
  later, as before.

Parts are created in the order and from the RNG stream ``UniGenModel(config)`` uses, so a seeded CPU build
draws the same initial values (in fp32; under bf16, zero.Init creates the trainable tensors in bf16 directly,
and on GPUs it creates them on the GPU, from its generator: deterministic, not the CPU path's values).
A recipe's ``model.pretrained`` (a whole unigen export) and a fully trained backbone are not covered: the
runtime builds those the plain way (unigen.orchestrator.runtime.build).
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Iterable

import torch

from unigen.model import components
from unigen.model.config import UniGenConfig
from unigen.model.hub import resolve_source

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"


def is_partitioned(param: torch.Tensor) -> bool:
    """Whether ``param`` is a ZeRO-3 parameter (its data lives in shards across the ranks)."""
    return hasattr(param, "ds_id")


def full_shape(param: torch.Tensor) -> torch.Size:
    """The parameter's real shape, also while ZeRO-3 holds it partitioned (then ``param.shape`` is empty)."""
    return getattr(param, "ds_shape", param.shape)


def gathered(params: Iterable[torch.Tensor]):
    """A context in which the ZeRO-3 parameters among ``params`` are whole on every rank; what rank 0 writes
    into them is kept (broadcast, then partitioned again). A no-op for ordinary parameters. Every rank must
    enter it with the same parameters (it is a collective)."""
    zero = [p for p in params if is_partitioned(p)]
    if not zero:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(zero, modifier_rank=0)


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def deepspeed_param_dtype(ds_config: dict[str, Any], config: UniGenConfig) -> torch.dtype:
    """The dtype DeepSpeed keeps the model's parameters in: bf16/fp16 when the config enables them (the engine
    casts everything to it), else the model's own dtype (the engine leaves parameters as they are)."""
    if (ds_config.get("bf16") or {}).get("enabled"):
        return torch.bfloat16
    if (ds_config.get("fp16") or {}).get("enabled"):
        return torch.float16
    return components.torch_dtype(config)


class PartitionedBuild:
    """What UniGenModel.__init__ asks of a partitioned build: a context that pauses zero.Init around the parts
    built whole, and the DiT built partitioned."""

    @contextlib.contextmanager
    def whole(self):
        """Build what runs inside without partitioning (DeepSpeed's own pause of a running zero.Init)."""
        from deepspeed.runtime.zero.partition_parameters import restore_init_context, shutdown_init_context

        shutdown_init_context()
        try:
            yield
        finally:
            restore_init_context()

    def build_dit(self, config: UniGenConfig):
        """SanaTransformer2DModel created partitioned, then the decoder source's weights copied in."""
        from diffusers import SanaTransformer2DModel

        source = resolve_source(config.decoder_source)
        settings = components.dit_settings(config, source)
        if source is None:
            model = SanaTransformer2DModel.from_config(settings)
        else:
            # The plain path's from_pretrained draws no random numbers: neither may this random init, so the
            # parts after it (VAE, LoRA adapters) draw what they draw on the plain path.
            with _fork_rng():
                model = SanaTransformer2DModel.from_config(settings)
            load_state(model, source_tensors(source, "transformer", config.decoder_revision), strict=True,
                       origin=f"decoder_source={config.decoder_source!r} transformer")
        if config.image_latent_conditioning and model.config.in_channels == config.latent_channels:
            components.widen_dit_input(model, config.latent_channels)
        return model


def build_partitioned(config: UniGenConfig, ds_config: dict[str, Any]):
    """UniGenModel(config) built for ZeRO-3 as the module docstring says; ``ds_config`` is the run's DeepSpeed
    config (the one ``deepspeed.initialize`` gets). Needs torch.distributed initialised (all ranks call it)."""
    import deepspeed

    from unigen.model.modeling import UniGenModel

    dtype = deepspeed_param_dtype(ds_config, config)
    # Under bf16 the engine would cast the frozen parts to bf16: they are made in it, never in fp32 first.
    frozen = "bfloat16" if (ds_config.get("bf16") or {}).get("enabled") else config.frozen_dtype
    build_config = UniGenConfig.from_dict({**config.to_dict(), "frozen_dtype": frozen})
    # The dtype reaches zero.Init through the config: its ``dtype=`` argument is ignored on CPU accelerators
    # (DeepSpeed 0.19: ``dtype or torch.float16 if fp16_supported else ...`` picks bf16 whatever is passed).
    init_config = {**ds_config, "bf16": {"enabled": dtype == torch.bfloat16},
                   "fp16": {**(ds_config.get("fp16") or {}), "enabled": dtype == torch.float16}}
    with deepspeed.zero.Init(config_dict_or_path=init_config):
        model = UniGenModel(build_config, partitioned=PartitionedBuild())
    model.config = config
    _place_whole_parts(model, dtype)
    return model


def _place_whole_parts(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """What deepspeed.initialize does to a model built whole but skips for one built under zero.Init: the
    whole parameters cast to the engine's dtype (fp16/bf16 runs) and the whole parts moved to the
    device the partitioned ones live on."""
    device = model.queries.device
    for param in model.parameters():
        if is_partitioned(param):
            continue
        if param.is_floating_point() and param.dtype != dtype and dtype in (torch.bfloat16, torch.float16):
            param.data = param.data.to(dtype)
        if param.device != device:
            param.data = param.data.to(device)
    for module in model.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None and buffer.device != device:
                module._buffers[name] = buffer.to(device)


@contextlib.contextmanager
def _fork_rng():
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        yield


# ---- loading whole tensors into partitioned modules ------------------------------------------------------
class _SafetensorsFiles:
    """Tensors of one or more safetensors files by name, each read only when asked for (so the ranks that
    do not write never read the trainable tensors)."""

    def __init__(self, paths: dict[str, str]) -> None:
        self._paths = paths  # tensor name -> file

    def keys(self):
        return self._paths.keys()

    def __contains__(self, name: str) -> bool:
        return name in self._paths

    def __getitem__(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(self._paths[name], framework="pt") as handle:
            return handle.get_tensor(name)

    def shape_of(self, name: str) -> tuple[int, ...]:
        """The tensor's shape, read from the file's header only."""
        from safetensors import safe_open

        with safe_open(self._paths[name], framework="pt") as handle:
            return tuple(handle.get_slice(name).get_shape())


def source_tensors(source: str, subfolder: str, revision: str | None) -> _SafetensorsFiles:
    """The diffusers weights of ``source``'s ``subfolder`` (one file or an index of shards), read lazily."""
    folder = os.path.join(source, subfolder) if os.path.isdir(source) else _hub_folder(source, subfolder, revision)
    index = os.path.join(folder, DIFFUSERS_WEIGHTS + ".index.json")
    if os.path.exists(index):
        with open(index) as fh:
            weight_map = json.load(fh)["weight_map"]
        return _SafetensorsFiles({k: os.path.join(folder, f) for k, f in weight_map.items()})
    path = os.path.join(folder, DIFFUSERS_WEIGHTS)
    if not os.path.exists(path):
        raise ValueError(f"{source}/{subfolder}: no {DIFFUSERS_WEIGHTS} (or its .index.json); a diffusers "
                         "folder in the hub layout is expected")
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        return _SafetensorsFiles({k: path for k in handle.keys()})


def _hub_folder(repo: str, subfolder: str, revision: str | None) -> str:
    from huggingface_hub import snapshot_download

    root = snapshot_download(repo, revision=revision, allow_patterns=[f"{subfolder}/*"])
    return os.path.join(root, subfolder)


def load_state(model: torch.nn.Module, state: Any, *, strict: bool, origin: str,
               prefix: str = "") -> tuple[list[str], list[str]]:
    """Copy the tensors of ``state`` (a mapping name -> tensor, read lazily where it can be) into ``model``,
    whose parameters may be ZeRO-3 partitioned: module by module, rank 0 copies into the gathered
    parameters and DeepSpeed broadcasts them; whole parameters and buffers are copied on every rank.
    Returns (missing, unexpected) state-dict names; with ``strict`` either one is an error naming ``origin``."""
    names = set(state.keys())
    expected, rank, done = set(), _rank(), set()
    for module_name, module in model.named_modules():
        base = f"{module_name}." if module_name else ""
        params = {base + n: p for n, p in module.named_parameters(recurse=False)}
        buffers = {base + n: b for n, b in module.named_buffers(recurse=False)
                   if n not in module._non_persistent_buffers_set}
        expected.update(params, buffers)
        present = [n for n in params if prefix + n in names and n not in done]
        for name in present:  # on every rank, before any collective: a mismatch fails all ranks alike
            _check_shape(_shape_of(state, prefix + name), tuple(full_shape(params[name])), name, origin)
        with gathered([params[n] for n in present]), torch.no_grad():
            for name in present:
                param = params[name]
                if not is_partitioned(param) or rank == 0:
                    params[name].copy_(state[prefix + name])
                done.add(name)
        for name, buffer in buffers.items():
            if prefix + name in names:
                value = state[prefix + name]
                _check_shape(tuple(value.shape), tuple(buffer.shape), name, origin)
                with torch.no_grad():
                    buffer.copy_(value)
    missing = sorted(n for n in expected if prefix + n not in names)
    unexpected = sorted(n[len(prefix):] for n in names if n.startswith(prefix) and n[len(prefix):] not in expected)
    if strict and (missing or unexpected):
        raise ValueError(f"{origin}: {len(missing)} tensors missing (e.g. {missing[:3]}), {len(unexpected)} "
                         f"unexpected (e.g. {unexpected[:3]}); the weights do not match this model's config")
    return missing, unexpected


def _shape_of(state: Any, name: str) -> tuple[int, ...]:
    """A tensor's shape without reading its data (safetensors header; a memory-mapped torch.load)."""
    return state.shape_of(name) if hasattr(state, "shape_of") else tuple(state[name].shape)


def _check_shape(got: tuple[int, ...], expected: tuple[int, ...], name: str, origin: str) -> None:
    if got != expected:
        raise ValueError(f"{origin}: {name} has shape {got}, the model's is {expected}; the weights do not match "
                         "this model's config")
