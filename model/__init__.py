"""unigen.model: the unified understanding + generation model (Qwen2.5-VL + query slots + Sana).

Names are loaded lazily (PEP 562) so that light modules such as ``unigen.model.config`` and
``unigen.model.data.spec`` can be imported by the CLI without pulling in torch, transformers or
diffusers (``unigen --help`` must stay fast on cluster filesystems).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "UniGenConfig": "unigen.model.config",
    "PRESET_NAMES": "unigen.model.config",
    "get_preset": "unigen.model.config",
    "UniGenModel": "unigen.model.modeling",
    "UniGenOutput": "unigen.model.modeling",
    "UniGenProcessor": "unigen.model.processor",
    "UniGenBatch": "unigen.model.processor",
    "UniGenPipeline": "unigen.model.pipeline",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from unigen.model.config import PRESET_NAMES, UniGenConfig, get_preset
    from unigen.model.modeling import UniGenModel, UniGenOutput
    from unigen.model.pipeline import UniGenPipeline
    from unigen.model.processor import UniGenBatch, UniGenProcessor


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'unigen.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
