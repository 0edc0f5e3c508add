"""Handing a collated step from a DataLoader worker to the main process in one shared-memory tensor.

torch passes every tensor of a worker's result as its own shared-memory file descriptor, and each one is a
round trip to the worker (its fd-sharing thread must wake up and answer). A step of 4 micro-batches of ~9
tensors is ~36 of them: milliseconds on idle cores, tens of milliseconds on busy shared ones, all spent
as data wait. ``pack`` copies every tensor of the step into one uint8 buffer (one descriptor) and
``unpack`` rebuilds the same batches as views of it: same values, dtypes, shapes and batch classes.
Results that are not dicts of tensors (a test's plain collate) pass through unchanged.

At real size a step is ~50 MB (unigen-3b input images are 1296 x 1176 float patches each, targets
3 x 512 x 512), so the copy matters (~50 ms per step; bench/data_loader.py --real-size,
runbooks/performance.md). Two choices keep it to one copy, off the worker's critical path:
- the buffer is created in shared memory: a plain one was copied there a second time when the queue
  pickled it (torch moves a tensor's storage to shared memory then);
- a worker returns ``pack_lazily(batches)``, which packs when the queue pickles it, in the queue's feeder
  thread, so the copy overlaps the worker loading its next step (as torch's own per-tensor copy does for a
  plain DataLoader); packing in the collate made every step wait for it.
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
    buffer = shared_bytes(size)
    for value, offset, nbytes in tensors:
        if nbytes:
            buffer[offset:offset + nbytes].copy_(value.reshape(-1).view(torch.uint8))
    return PackedStep(buffer, layout)


class LazyPack:
    """Batches that become a PackedStep when pickled (the DataLoader worker's queue does that in its feeder
    thread); unpacked where they were never pickled, they are the batches themselves."""

    def __init__(self, batches: list):
        self.batches = batches

    def __reduce__(self):
        # This runs in the queue's feeder thread, where an exception only prints and drops the step (the
        # main process would then wait for it forever): fall back to torch's per-tensor hand-over.
        try:
            return _same, (pack(self.batches),)
        except Exception:  # noqa: BLE001 - same data by the slower path, never a lost step
            return _same, (self.batches,)


def _same(value: Any) -> Any:
    return value


def pack_lazily(batches: list) -> Any:
    """What a worker returns: ``pack(batches)``, done when (and where) the result is pickled."""
    return LazyPack(batches)


def shared_bytes(size: int) -> Any:
    """An uninitialised uint8 tensor of ``size`` bytes whose storage already lives in shared memory (so
    pickling it for another process sends a handle, never a copy)."""
    import torch
    if size == 0:
        return torch.empty(0, dtype=torch.uint8)
    new_shared = getattr(torch.UntypedStorage, "_new_shared", None)  # private: what share_memory_() allocates
    if new_shared is None:  # a torch without it: one extra copy, same result
        return torch.empty(size, dtype=torch.uint8).share_memory_()
    return torch.empty(0, dtype=torch.uint8).set_(new_shared(size))


def unpack(step: Any) -> list:
    """The batches ``pack`` was given (tensors as views of the one buffer); anything else as is."""
    if isinstance(step, LazyPack):
        return step.batches
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
