"""Surface normals: RGB = (n + 1) / 2 * 255 in the OpenGL camera frame (x right, y up, z toward the
viewer), so a surface facing the camera is (128, 128, 255). Invalid pixels (zero vector) are black,
which no unit vector encodes. Inverse: n = rgb / 255 * 2 - 1, renormalised; angular error < 1 degree.
"""
from __future__ import annotations

import numpy as np

# Source conventions -> our frame, as per-axis signs. OpenCV/ScanNet style: x right, y down, z forward.
CONVENTIONS = {"opengl": (1.0, 1.0, 1.0), "opencv": (1.0, -1.0, -1.0)}


def from_png(rgb: np.ndarray) -> np.ndarray:
    """A published normal PNG (unit vectors as rgb/255*2-1) -> float vectors (zero where invalid)."""
    return decode(rgb)


def to_frame(normals: np.ndarray, convention: str) -> np.ndarray:
    if convention not in CONVENTIONS:
        raise ValueError(f"normal convention {convention!r}: use one of {sorted(CONVENTIONS)}")
    return normals * np.asarray(CONVENTIONS[convention], np.float32)


def encode(normals: np.ndarray) -> np.ndarray:
    n = np.asarray(normals, np.float64)
    length = np.linalg.norm(n, axis=-1, keepdims=True)
    valid = length[..., 0] > 1e-6
    unit = np.where(length > 1e-6, n / np.maximum(length, 1e-12), 0.0)
    rgb = np.rint((unit + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    rgb[~valid] = 0
    return rgb


def decode(rgb: np.ndarray) -> np.ndarray:
    v = np.asarray(rgb, np.float64)[..., :3] / 127.5 - 1.0
    length = np.linalg.norm(v, axis=-1, keepdims=True)
    valid = np.abs(length[..., 0] - 1.0) < 0.5  # black decodes to length sqrt(3): invalid
    out = v / np.maximum(length, 1e-12)
    out[~valid] = 0.0
    return out.astype(np.float32)
