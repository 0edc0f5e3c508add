"""Handing a collated step from a DataLoader worker to the main process in one shared-memory tensor.

torch passes every tensor of a worker's result as its own shared-memory file descriptor, and each one is a
round trip to the worker (its fd-sharing thread must wake up and answer). A step of 4 micro-batches of ~9
tensors is ~36 of them: milliseconds on idle cores, tens of milliseconds on busy shared ones, all spent
as data wait. ``pack`` copies every tensor of the step into one uint8 buffer (one descriptor) and
``unpack`` rebuilds the same batches as views of it: same values, dtypes, shapes and batch classes.
Results that are not dicts of tensors (a test's plain collate) pass through unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_ALIGN = 16  # every view starts on a boundary any dtype accepts


@dataclass
class PackedStep:
    buffer: Any  # one uint8 torch tensor holding every tensor of the step
    layout: list  # per batch: (batch class, {key: value or ("tensor", dtype, shape, offset, nbytes)})


def pack(batches: list) -> Any:
    """``batches`` as one PackedStep when every batch is a dict (tensors and plain values), else as is."""
    import torch
    if not batches or not all(isinstance(b, dict) for b in batches):
        return batches
    tensors, layout, size = [], [], 0
    for batch in batches:
        entries = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().contiguous()
                nbytes = value.numel() * value.element_size()
                entries[key] = ("tensor", value.dtype, tuple(value.shape), size, nbytes)
                tensors.append((value, size, nbytes))
                size += -(-nbytes // _ALIGN) * _ALIGN
            else:
                entries[key] = ("value", value)
        layout.append((type(batch), entries))
    buffer = torch.empty(size, dtype=torch.uint8)
    for value, offset, nbytes in tensors:
        if nbytes:
            buffer[offset:offset + nbytes].copy_(value.reshape(-1).view(torch.uint8))
    return PackedStep(buffer, layout)


def unpack(step: Any) -> list:
    """The batches ``pack`` was given (tensors as views of the one buffer); anything else as is."""
    if not isinstance(step, PackedStep):
        return step
    import torch
    out = []
    for cls, entries in step.layout:
        batch = cls()
        for key, entry in entries.items():
            if entry[0] == "value":
                batch[key] = entry[1]
                continue
            _, dtype, shape, offset, nbytes = entry
            if nbytes == 0:
                batch[key] = torch.empty(shape, dtype=dtype)
            else:
                batch[key] = step.buffer[offset:offset + nbytes].view(dtype).view(shape)
        out.append(batch)
    return out
