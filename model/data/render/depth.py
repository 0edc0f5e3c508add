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

def read_dpt(data: bytes, name: str = "depth .dpt") -> np.ndarray:
    """MPI Sintel ``.dpt``: float32 tag 202021.25, int32 width, int32 height, then exactly width*height
    float32 depths (little-endian). Anything else is a BadRecord naming ``name``."""
    if len(data) < 12:
        raise BadRecord(f"{name}: a Sintel .dpt expects a 12-byte header (float32 tag {SINTEL_TAG}, int32 "
                        f"width, int32 height), found {len(data)} bytes")
    tag, w, h = struct.unpack("<fii", data[:12])
    if abs(tag - SINTEL_TAG) > 1e-3:
        raise BadRecord(f"{name}: a Sintel .dpt expects the tag {SINTEL_TAG}, found wrong tag {tag!r}: not a "
                        ".dpt depth file (or a different format declared as depth_format: dpt)")
    if w <= 0 or h <= 0 or w * h > 1 << 28:
        raise BadRecord(f"{name}: a Sintel .dpt header gives {w}x{h}, expected a positive width and height")
    want = 12 + 4 * w * h
    if len(data) != want:
        raise BadRecord(f"{name}: a Sintel .dpt of {w}x{h} (as its header says) expects {want} bytes "
                        f"(12 + 4*{w}*{h}), found {len(data)}: the file is truncated or its header is wrong")
    return np.frombuffer(data, "<f4", count=w * h, offset=12).reshape(h, w).astype(np.float32)


def write_dpt(depth: np.ndarray) -> bytes:
    h, w = depth.shape
    return struct.pack("<fii", SINTEL_TAG, w, h) + np.asarray(depth, "<f4").tobytes()


def read_npy(data: bytes, name: str, expected: str) -> np.ndarray:
    """A numeric .npy (never unpickled); a file that is not one is a BadRecord naming ``name``."""
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise BadRecord(f"{name}: expected {expected} in a .npy, found an unreadable file ({exc})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        kind = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
        raise BadRecord(f"{name}: expected {expected} in a .npy (a float or integer dtype), found dtype {kind}")
    return arr


def png_info(data: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR chunk, or None when ``data`` is not a PNG."""
    if data[:8] != PNG_SIGNATURE or len(data) < 26 or data[12:16] != b"IHDR":
        return None
    return data[24], data[25]


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COLOUR = {0: "gray", 2: "RGB", 3: "palette", 4: "gray+alpha", 6: "RGBA"}


def read_png16(data: bytes, name: str, png_scale: float, declared: str) -> np.ndarray:
    """A single-channel 16-bit PNG (KITTI, Virtual KITTI 2) -> metres = value * png_scale. The KITTI
    devkit asserts the same: an 8-bit PNG carries no metric depth at these scales."""
    info = png_info(data)
    if info is None:
        raise BadRecord(f"{name}: {declared} expects a 16-bit grayscale PNG, found a file that is not a PNG")
    bits, colour = info
    if bits != 16 or colour != 0:
        raise BadRecord(f"{name}: {declared} expects a 16-bit grayscale PNG (mode I;16), found {bits}-bit "
                        f"{PNG_COLOUR.get(colour, f'colour type {colour}')} PNG; an 8-bit or colour PNG is not "
                        "metric depth: fix the file, or write it as .npy float metres (depth_format: npy)")
    img = open_image(data, f"{name}: depth image")
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise BadRecord(f"{name}: {declared} expects one channel, found mode {img.mode}")
    return arr.astype(np.float32) * np.float32(png_scale)


def read_depth(data: bytes, fmt: str = "auto", png_scale: float = 1 / 256, name: str = "depth") -> np.ndarray:
    """Metres from the bytes of a depth file; ``name`` (its path) heads every BadRecord message.

    fmt: ``dpt`` (Sintel), ``npy`` (float metres, HxW or HxWx1), ``png16`` (16-bit grayscale PNG;
    metres = value * png_scale, 1/256 for KITTI, 1/100 for Virtual KITTI 2; 0 = no measurement),
    ``float`` (a float image, e.g. the TIFF/``F``-mode images of Hugging Face NYUv2), or ``auto`` (by
    content: a PNG must then be a 16-bit one, as for png16). A file that is not what the format expects
    (an 8-bit PNG under png16, a .dpt with a wrong tag or size, an .npy of the wrong shape or dtype) is a
    BadRecord saying what was expected and what was found.
    """
    declared = f"depth_format {fmt}"
    if fmt == "auto":
        fmt = sniff(data)
        declared = f"depth_format auto (detected {fmt})"
    if fmt == "dpt":
        return read_dpt(data, name)
    if fmt == "npy":
        arr = read_npy(data, name, "an HxW array of depths in metres")
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim != 2:
            raise BadRecord(f"{name}: {declared} expects an HxW (or HxWx1) array of depths, found shape "
                            f"{arr.shape}")
        return arr.astype(np.float32)
    if fmt == "png16":
        return read_png16(data, name, png_scale, declared)
    img = open_image(data, f"{name}: depth image")
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise BadRecord(f"{name}: {declared} expects a one-channel image, found mode {img.mode}")
    if arr.dtype.kind in "iu":
        return arr.astype(np.float32) * np.float32(png_scale)
    return arr.astype(np.float32)


def sniff(data: bytes) -> str:
    if len(data) >= 4 and abs(struct.unpack("<f", data[:4])[0] - SINTEL_TAG) < 1e-3:
        return "dpt"
    if data[:6] == b"\x93NUMPY":
        return "npy"
    if data[:8] == PNG_SIGNATURE:
        return "png16"
    return "float"
