"""Reading images from anything a conversation may hold, and turning targets into pixel tensors."""
from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image

_HOW = "pass a PIL image, a local path, a file:// or fsspec URL (s3://...), encoded bytes or an HxWx3 array"


def describe(obj: Any) -> str:
    """A short description of an image reference for error messages (never the bytes)."""
    if isinstance(obj, (str, os.PathLike)):
        return repr(os.fspath(obj))
    if isinstance(obj, (bytes, bytearray)):
        return f"<{len(obj)} bytes>"
    return f"<{type(obj).__name__}>"


def load_image(obj: Any, where: str, what: str = "image") -> Image.Image:
    """An RGB PIL image from a PIL image, path, file:// or fsspec URL, bytes or array.

    Anything unreadable is a ValueError that starts with ``where`` (conversation/message/item).
    """
    try:
        if isinstance(obj, Image.Image):
            image = obj
        elif isinstance(obj, (str, os.PathLike)):
            import fsspec

            with fsspec.open(os.fspath(obj), "rb") as fh:
                image = Image.open(io.BytesIO(fh.read()))
        elif isinstance(obj, (bytes, bytearray)):
            image = Image.open(io.BytesIO(bytes(obj)))
        elif isinstance(obj, np.ndarray) and obj.ndim == 3 and obj.shape[-1] in (1, 3, 4):
            array = obj if obj.dtype == np.uint8 else (np.clip(obj, 0, 1) * 255).round().astype(np.uint8)
            image = Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array)
        else:
            raise TypeError(f"unsupported type {type(obj).__name__}")
        image.load()
        return image.convert("RGB")
    except Exception as err:  # noqa: BLE001 - every failure becomes one clear user error
        raise ValueError(f"{where}: the {what} {describe(obj)} is not a readable image "
                         f"({type(err).__name__}: {err}); {_HOW}") from None


def center_square(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` (bicubic), then crop the centre square."""
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def to_pixels(image: Image.Image, size: int):
    """(3, size, size) float32 tensor in [-1, 1], as the VAE takes it."""
    import torch

    array = np.asarray(center_square(image, size), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def to_pil(pixels) -> Image.Image:
    """Inverse of to_pixels for one (3, H, W) tensor in [-1, 1]."""
    array = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to("cpu").numpy().astype(np.uint8)
    return Image.fromarray(array.transpose(1, 2, 0))
