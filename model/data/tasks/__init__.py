"""Task adapters: raw records -> conversations of ``image`` / ``text`` / ``image_gen`` items."""
from __future__ import annotations

import importlib

_ADAPTERS = {
    "t2i": ("unigen.model.data.tasks.t2i", "TextToImage"),
    "edit": ("unigen.model.data.tasks.edit", "Edit"),
    "interleaved": ("unigen.model.data.tasks.interleaved", "Interleaved"),
    "multi_image": ("unigen.model.data.tasks.multi_image", "MultiImage"),
    "depth": ("unigen.model.data.tasks.dense", "Depth"),
    "normal": ("unigen.model.data.tasks.dense", "Normal"),
    "segmentation": ("unigen.model.data.tasks.dense", "Segmentation"),
    "pose": ("unigen.model.data.tasks.pose", "Pose"),
    "grounding": ("unigen.model.data.tasks.grounding", "Grounding"),
}


def adapter_class(task: str):
    """The adapter class of ``task`` (imported on first use)."""
    module, cls = _ADAPTERS[task]
    return getattr(importlib.import_module(module), cls)


def make_adapter(source, image_size: int, where: str = "data.sources[]"):
    """The adapter for ``source.task``, with its field mapping and options validated."""
    return adapter_class(source.task)(source, image_size, where=where)


TASKS = tuple(_ADAPTERS)
