"""The one geometric transform of the data package: scale the short side to ``size``, crop the centre.

Inputs and targets of a sample go through the same transform, so dense targets stay pixel-aligned with
their input, and points/boxes are mapped with the same numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SquareFit:
    src_w: int
    src_h: int
    size: int

    @property
    def scale(self) -> float:
        return self.size / min(self.src_w, self.src_h)

    @property
    def offset(self) -> tuple[float, float]:
        """Top-left of the crop window in source pixels."""
        crop = self.size / self.scale
        return (self.src_w - crop) / 2.0, (self.src_h - crop) / 2.0

    def image(self, img, resample=None):
        """The PIL image resized + centre-cropped in one resampling step (bicubic by default)."""
        from PIL import Image
        x0, y0 = self.offset
        crop = self.size / self.scale
        if img.size != (self.src_w, self.src_h):
            img = img.resize((self.src_w, self.src_h), Image.Resampling.BICUBIC)
        return img.resize((self.size, self.size), resample or Image.Resampling.BICUBIC,
                          box=(x0, y0, x0 + crop, y0 + crop))

    def array(self, arr: np.ndarray) -> np.ndarray:
        """Nearest-neighbour resample of an HxW[xC] value map (depth, normals, class ids): values are
        never blended, so invalid (0) depth stays invalid and class ids stay ids."""
        x0, y0 = self.offset
        centres = (np.arange(self.size) + 0.5) / self.scale
        cols = np.clip(np.floor(centres + x0).astype(int), 0, arr.shape[1] - 1)
        rows = np.clip(np.floor(centres + y0).astype(int), 0, arr.shape[0] - 1)
        return arr[rows][:, cols]

    def points(self, xy: np.ndarray) -> np.ndarray:
        """Source pixel coordinates (N x 2, x then y) -> target pixel coordinates."""
        x0, y0 = self.offset
        out = np.asarray(xy, np.float64).copy()
        out[..., 0] = (out[..., 0] - x0) * self.scale
        out[..., 1] = (out[..., 1] - y0) * self.scale
        return out

    def box_xyxy(self, box) -> list[float] | None:
        """A source xyxy box in target pixels, clipped to the crop; None if it falls outside."""
        (a, b), (c, d) = self.points(np.array([[box[0], box[1]], [box[2], box[3]]]))
        a, b, c, d = (float(np.clip(v, 0, self.size)) for v in (a, b, c, d))
        return None if c - a < 1 or d - b < 1 else [a, b, c, d]


def box_to_xyxy(box, fmt: str, units: str, width: int, height: int) -> list[float]:
    """Convert a box given as ``xywh`` (COCO) or ``xyxy``, in ``pixels`` or ``normalized`` (0..1) or
    ``normalized1000`` (0..1000) coordinates, to absolute-pixel xyxy."""
    x, y, a, b = (float(v) for v in box)
    if units == "normalized":
        x, a, y, b = x * width, a * width, y * height, b * height
    elif units == "normalized1000":
        x, a, y, b = x * width / 1000, a * width / 1000, y * height / 1000, b * height / 1000
    elif units != "pixels":
        raise ValueError(f"box units {units!r}: use pixels, normalized or normalized1000")
    if fmt == "xywh":
        return [x, y, x + a, y + b]
    if fmt == "xyxy":
        return [x, y, a, b]
    raise ValueError(f"box format {fmt!r}: use xywh or xyxy")
