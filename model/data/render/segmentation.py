"""Class-id maps <-> RGB with the PASCAL VOC colour map (id bits spread over the channels' high bits),
one fixed palette for every label set: id 0 is black, 255 (the usual "ignore") is (224, 224, 192).
Inverse: exact lookup; a colour not in the palette (e.g. a generated image) maps to the nearest entry.
"""
from __future__ import annotations

import functools

import numpy as np

LABEL_SETS = {"ade20k-150": 150, "coco-panoptic-133": 133, "cityscapes-19": 19, "shapes": 4}


@functools.lru_cache(maxsize=8)
def palette(n: int = 256) -> np.ndarray:
    """n x 3 uint8, the VOC colour map (bit i of the id -> bit 7 - i//3 of channel i % 3)."""
    out = np.zeros((n, 3), np.uint8)
    for cid in range(n):
        r = g = b = 0
        c = cid
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out[cid] = (r, g, b)
    return out


def encode(classes: np.ndarray) -> np.ndarray:
    ids = np.asarray(classes)
    n = max(256, int(ids.max()) + 1) if ids.size else 256
    return palette(n)[ids.astype(np.int64)]


def decode(rgb: np.ndarray, num_classes: int = 256) -> np.ndarray:
    """RGB -> class ids among the first ``num_classes`` palette entries (plus 255 if in range)."""
    pal = palette(max(num_classes, 256)).astype(np.int64)
    ids_allowed = np.arange(num_classes)
    if num_classes <= 255:
        ids_allowed = np.append(ids_allowed, 255)
    pal = pal[ids_allowed]
    px = np.asarray(rgb, np.int64)[..., :3]
    keys = (px[..., 0] << 16) | (px[..., 1] << 8) | px[..., 2]
    pkeys = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    order = np.argsort(pkeys)
    pos = np.clip(np.searchsorted(pkeys[order], keys), 0, len(order) - 1)
    exact = pkeys[order][pos] == keys
    out = ids_allowed[order][pos]
    if not exact.all():
        miss = px[~exact]
        dist = ((miss[:, None, :] - pal[None, :, :]) ** 2).sum(-1)
        out[~exact] = ids_allowed[dist.argmin(axis=1)]
    return out
