"""Surface normals: RGB = (n + 1) / 2 * 255 in the OpenGL camera frame (x right, y up, z toward the
viewer), normals pointing out of the surface toward the camera, so a wall facing the camera is
(0, 0, 1) = (128, 128, 255) and a floor is (0, 1, 0). Invalid pixels (zero vector) are black, which no
unit vector encodes. Inverse: n = rgb / 255 * 2 - 1, renormalised; angular error < 1 degree.

Source conventions (``options.convention`` of the normal task) differ from ours only by per-axis signs;
each is given as (axes x, y, z; where normals point; camera-facing wall; floor):

- ``opengl``: right, up, toward the viewer; toward the camera; (0, 0, 1); (0, 1, 0). Ours, unchanged.
- ``opencv``: right, down, forward (into the scene); toward the camera; (0, 0, -1); (0, -1, 0).
- ``opencv_away`` (alias ``dsine``): right, down, forward; AWAY from the camera; (0, 0, 1); (0, 1, 0).
  A wall on the left of the image (facing right) is (-1, 0, 0) here, (1, 0, 0) in ours.

``opencv_away`` is how DSINE packages the GeoNet (NYUv2) and FrameNet (ScanNet) ground truth. Anything
else: pick the closest convention and negate axes with ``options.flip`` (e.g. ``[y]``); signs commute,
so flipping before or after the convention's mapping is the same.
"""
from __future__ import annotations

import numpy as np

# Source conventions -> our frame, as per-axis signs (see the module docstring for their meanings).
CONVENTIONS = {
    "opengl": (1.0, 1.0, 1.0),
    "opencv": (1.0, -1.0, -1.0),
    "opencv_away": (-1.0, 1.0, 1.0),
}
ALIASES = {"dsine": "opencv_away"}
AXES = ("x", "y", "z")


def convention_names() -> list:
    return sorted(CONVENTIONS) + sorted(ALIASES)


def signs(convention: str, flip=()) -> np.ndarray:
    """Per-axis signs taking source vectors in ``convention`` (then ``flip``: axes to negate) to ours."""
    name = ALIASES.get(convention, convention)
    if name not in CONVENTIONS:
        raise ValueError(f"normal convention {convention!r}: use one of {convention_names()}")
    out = np.asarray(CONVENTIONS[name], np.float32).copy()
    for axis in flip or ():
        if axis not in AXES:
            raise ValueError(f"normal flip axis {axis!r}: use x, y or z")
        out[AXES.index(axis)] *= -1.0
    return out


def from_png(rgb: np.ndarray) -> np.ndarray:
    """A published normal PNG (unit vectors as rgb/255*2-1) -> float vectors (zero where invalid)."""
    return decode(rgb)


def to_frame(normals: np.ndarray, convention: str, flip=()) -> np.ndarray:
    """Source vectors in ``convention`` (with the ``flip`` axes negated) -> our OpenGL, toward-camera frame."""
    return (normals * signs(convention, flip)).astype(np.float32)


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
