"""Grounding targets: the input image with the referred box outlined in magenta (255, 0, 255).

The outline is drawn inside the box (its outer edge is the box), ``line_width(size)`` pixels thick.
Inverse: the rows and columns where most pixels are magenta give the outer edges (<= 1 px error).
"""
from __future__ import annotations

import numpy as np

BOX_COLOUR = (255, 0, 255)


def line_width(size: int) -> int:
    return max(2, round(size / 64))


def draw_box(img, box_xyxy, width: int | None = None):
    """A copy of the PIL image with the box (target pixels, xyxy, exclusive end) outlined."""
    from PIL import ImageDraw
    out = img.copy()
    x0, y0, x1, y1 = (int(round(v)) for v in box_xyxy)
    ImageDraw.Draw(out).rectangle([x0, y0, x1 - 1, y1 - 1], outline=BOX_COLOUR,
                                  width=width or line_width(min(img.size)))
    return out


def find_box(rgb: np.ndarray, tol: int = 40) -> list[int] | None:
    """The outlined box (xyxy, exclusive end) in a rendered target, or None if there is none."""
    px = np.asarray(rgb, np.int32)[..., :3]
    mask = (np.abs(px - np.asarray(BOX_COLOUR)) <= tol).all(axis=-1)
    if mask.sum() < 4:
        return None
    rows, cols = mask.sum(axis=1), mask.sum(axis=0)
    edge_rows = np.nonzero(rows >= max(2, 0.5 * rows.max()))[0]
    edge_cols = np.nonzero(cols >= max(2, 0.5 * cols.max()))[0]
    if len(edge_rows) == 0 or len(edge_cols) == 0:
        return None
    return [int(edge_cols[0]), int(edge_rows[0]), int(edge_cols[-1]) + 1, int(edge_rows[-1]) + 1]
