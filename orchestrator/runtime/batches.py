"""Moving a collated batch (the processor's dict of tensors and plain values) to a rank's device."""
from __future__ import annotations

from typing import Any


def to_device(batch: dict[str, Any], device: str) -> dict[str, Any]:
    """Tensors to ``device`` (non-blocking from pinned memory); everything else as it is."""
    import torch

    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
