"""Depth maps: decoding the published formats to metres, and the gray encoding with its inverse.

Encoding: v = 255 - round(t * 254) for valid depth, t = normalised depth in [0, 1] over
[d_min, d_max] (log by default: t = ln(d/d_min) / ln(d_max/d_min); or linear), clipped; v = 0 where
depth is invalid (0, negative or not finite). So near is bright, far is dark, and "no measurement" is
black. Inverse error: log over 0.1-100 m: at most 1.4 % of the depth; linear: (d_max-d_min)/508 m.
"""
from __future__ import annotations

import io
import struct

import numpy as np

from unigen.model.data.errors import BadRecord
from unigen.model.data.fields import open_image

DEFAULT_RANGE = (0.1, 100.0)
SINTEL_TAG = 202021.25


def _t(depth: np.ndarray, d_min: float, d_max: float, encoding: str) -> np.ndarray:
    d = np.clip(depth, d_min, d_max)
    if encoding == "log":
        return np.log(d / d_min) / np.log(d_max / d_min)
    if encoding == "linear":
        return (d - d_min) / (d_max - d_min)
    raise ValueError(f"depth encoding {encoding!r}: use log or linear")


def encode(depth: np.ndarray, d_range=DEFAULT_RANGE, encoding: str = "log") -> np.ndarray:
    """Metres (HxW float) -> RGB uint8 HxWx3 (gray)."""
    depth = np.asarray(depth, np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    t = _t(np.where(valid, depth, d_range[0]), d_range[0], d_range[1], encoding)
    v = np.where(valid, 255 - np.rint(t * 254), 0).astype(np.uint8)
    return np.repeat(v[..., None], 3, axis=-1)


def decode(rgb: np.ndarray, d_range=DEFAULT_RANGE, encoding: str = "log") -> np.ndarray:
    """RGB (or gray) image -> metres (0 where the pixel says invalid)."""
    v = np.asarray(rgb, np.float64)
    if v.ndim == 3:
        v = v.mean(axis=-1)
    t = np.clip((255.0 - v) / 254.0, 0.0, 1.0)
    d_min, d_max = d_range
    if encoding == "log":
        d = d_min * np.exp(t * np.log(d_max / d_min))
    elif encoding == "linear":
        d = d_min + t * (d_max - d_min)
    else:
        raise ValueError(f"depth encoding {encoding!r}: use log or linear")
    return np.where(v < 0.5, 0.0, d)


# -- published formats ---------------------------------------------------------------------------------

def read_dpt(data: bytes) -> np.ndarray:
    """MPI Sintel ``.dpt``: float32 tag 202021.25, int32 width, int32 height, then float32 depths."""
    if len(data) < 12:
        raise BadRecord("depth .dpt: file shorter than its 12-byte header")
    tag, w, h = struct.unpack("<fii", data[:12])
    if abs(tag - SINTEL_TAG) > 1e-3:
        raise BadRecord(f"depth .dpt: wrong tag {tag} (expected {SINTEL_TAG})")
    if w <= 0 or h <= 0 or len(data) < 12 + 4 * w * h:
        raise BadRecord(f"depth .dpt: {w}x{h} does not fit in {len(data)} bytes")
    return np.frombuffer(data, "<f4", count=w * h, offset=12).reshape(h, w).astype(np.float32)


def write_dpt(depth: np.ndarray) -> bytes:
    h, w = depth.shape
    return struct.pack("<fii", SINTEL_TAG, w, h) + np.asarray(depth, "<f4").tobytes()


def read_depth(data: bytes, fmt: str = "auto", png_scale: float = 1 / 256) -> np.ndarray:
    """Metres from the bytes of a depth file.

    fmt: ``dpt`` (Sintel), ``npy`` (float metres), ``png16`` (integer PNG; metres = value * png_scale,
    1/256 for KITTI, 1/100 for Virtual KITTI 2; 0 = no measurement), ``float`` (a float image, e.g. the
    TIFF/``F``-mode images of Hugging Face NYUv2), or ``auto`` (by content).
    """
    if fmt == "auto":
        fmt = sniff(data)
    if fmt == "dpt":
        return read_dpt(data)
    if fmt == "npy":
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as exc:
            raise BadRecord(f"depth .npy: {exc}") from None
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim != 2:
            raise BadRecord(f"depth .npy: expected an HxW array, got shape {arr.shape}")
        return arr.astype(np.float32)
    img = open_image(data, "depth image")
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise BadRecord(f"depth image: expected one channel, got mode {img.mode}")
    if fmt == "png16" or (fmt == "float" and arr.dtype.kind in "iu"):
        return arr.astype(np.float32) * np.float32(png_scale)
    return arr.astype(np.float32)


def sniff(data: bytes) -> str:
    if len(data) >= 4 and abs(struct.unpack("<f", data[:4])[0] - SINTEL_TAG) < 1e-3:
        return "dpt"
    if data[:6] == b"\x93NUMPY":
        return "npy"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png16"
    return "float"
