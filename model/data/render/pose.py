"""COCO 17-keypoint skeletons drawn on a black canvas, and the inverse (image -> keypoints).

Limbs (COCO's 19 skeleton pairs) are lines in ``LIMB_COLOURS`` (hue i/19, value 0.6); joints are discs
in ``JOINT_COLOURS`` (hue k/17, full value) drawn on top. Joint colours are >= 45 apart from each other
and >= 100 from every limb colour in some channel, so the inverse finds each joint by colour
(tolerance 20) and returns the centroid of each blob: < 1 px error (centres are rounded to pixels) for joints whose discs do not overlap.
Only labelled keypoints (v > 0) are drawn; a limb needs both ends labelled.
"""
from __future__ import annotations

import colorsys

import numpy as np

KEYPOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
             "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
             "left_knee", "right_knee", "left_ankle", "right_ankle")
# COCO person_keypoints categories[0].skeleton, 1-based keypoint indices.
SKELETON = ((16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
            (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7))


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


JOINT_COLOURS = tuple(_hsv(k / 17, 1.0, 1.0) for k in range(17))
LIMB_COLOURS = tuple(_hsv(i / 19, 1.0, 0.6) for i in range(19))


def sizes(size: int) -> tuple[int, int]:
    """(limb width, joint radius) in pixels for a ``size`` x ``size`` target. The radius is at least 2 (a
    5 x 5 disc): a 3 x 3 disc at 64 px does not survive an autoencoder's f4 cells or a little blur."""
    return max(1, round(size / 128)), max(2, round(size / 96))


def draw(people: list[np.ndarray], size: int):
    """people: arrays 17 x 3 (x, y, v) in target pixels -> PIL RGB image ``size`` x ``size``."""
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (size, size), (0, 0, 0))
    draw_ = ImageDraw.Draw(img)
    limb_w, radius = sizes(size)
    for kps in people:
        for i, (a, b) in enumerate(SKELETON):
            pa, pb = kps[a - 1], kps[b - 1]
            if pa[2] > 0 and pb[2] > 0:
                draw_.line([(pa[0], pa[1]), (pb[0], pb[1])], fill=LIMB_COLOURS[i], width=limb_w)
    for kps in people:
        for k in range(17):
            x, y, v = kps[k]
            if v > 0:
                x, y = round(float(x)), round(float(y))  # integer centre: the disc is symmetric about it
                draw_.ellipse([x - radius, y - radius, x + radius, y + radius], fill=JOINT_COLOURS[k])
    return img


def decode(rgb: np.ndarray, tol: int = 20) -> list[list[tuple[float, float]]]:
    """For each of the 17 keypoints, the centroids (x, y) of every blob of its colour, in the
    coordinates ``draw`` was given (a pixel index is its coordinate)."""
    px = np.asarray(rgb, np.int32)[..., :3]
    out = []
    for colour in JOINT_COLOURS:
        mask = (np.abs(px - np.asarray(colour)) <= tol).all(axis=-1)
        out.append([(float(xs.mean()), float(ys.mean())) for ys, xs in _blobs(mask)])
    return out


def _blobs(mask: np.ndarray):
    """Connected components (8-neighbour) of a boolean mask as (ys, xs) arrays: a plain flood fill,
    enough for the few small joint discs of one image."""
    seen = np.zeros_like(mask, bool)
    h, w = mask.shape
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        stack, ys, xs = [(y0, x0)], [], []
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            ys.append(y)
            xs.append(x)
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
        yield np.asarray(ys, np.float64), np.asarray(xs, np.float64)
