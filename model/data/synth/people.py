"""Stick figures with COCO's 17 keypoints, for the synthetic pose set.

A figure is a template in body-height units (nose at the top, ankles at the bottom; the person's left
is the image's right, as for someone facing the camera), scaled, placed, with jittered arms and legs.
The RGB picture draws the body (limbs, head) in one colour; the annotation lists every keypoint with
v = 2 (labelled, visible), COCO style.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from unigen.model.data.render.pose import SKELETON
from unigen.model.data.synth.scenes import BACKGROUNDS

# x (person's left positive = image right), y down; units of body height.
TEMPLATE = np.array([
    (0.00, 0.06), (0.025, 0.045), (-0.025, 0.045), (0.05, 0.06), (-0.05, 0.06),  # nose, eyes, ears
    (0.11, 0.20), (-0.11, 0.20), (0.16, 0.36), (-0.16, 0.36), (0.18, 0.50), (-0.18, 0.50),  # arms
    (0.07, 0.52), (-0.07, 0.52), (0.08, 0.74), (-0.08, 0.74), (0.09, 0.96), (-0.09, 0.96),  # legs
])
BODY_COLOURS = ((230, 230, 230), (40, 40, 40), (200, 60, 60), (60, 60, 200))


def figure(rng: np.random.Generator, cx: float, top: float, height: float) -> np.ndarray:
    pts = TEMPLATE.copy()
    pts[7:11, 1] += rng.uniform(-0.12, 0.06, size=4)  # elbows/wrists up or down
    pts[9:11, 0] += rng.uniform(-0.04, 0.08, size=2) * np.sign(pts[9:11, 0])
    pts[13:17, 0] += rng.uniform(-0.02, 0.04, size=4) * np.sign(pts[13:17, 0])
    xy = np.stack([cx + pts[:, 0] * height, top + pts[:, 1] * height], axis=1)
    return np.round(xy, 1)


def draw_people(rng: np.random.Generator, w: int, h: int, max_people: int = 2):
    """(PIL image, COCO-style persons [{"keypoints": [x, y, v] * 17, "bbox": xywh}])."""
    bg = BACKGROUNDS[list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]]
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    n = int(rng.integers(1, max_people + 1))
    persons = []
    for p in range(n):
        height = float(rng.uniform(0.7, 0.9) * h)
        slot = w / n
        cx = float(slot * p + slot / 2 + rng.uniform(-0.1, 0.1) * slot)
        top = float(rng.uniform(0.02, h - height - 1))
        xy = figure(rng, cx, top, height)
        contrasting = [c for c in BODY_COLOURS if abs(sum(c) - sum(bg)) > 240]
        colour = contrasting[int(rng.integers(len(contrasting)))]
        for a, b in SKELETON:
            draw.line([tuple(xy[a - 1]), tuple(xy[b - 1])], fill=colour, width=2)
        r = 0.05 * height
        draw.ellipse([xy[0][0] - r, xy[0][1] - r, xy[0][0] + r, xy[0][1] + r], outline=colour, width=2)
        kps = [float(v) for x, y in xy for v in (x, y, 2)]
        x0, y0 = xy.min(axis=0)
        x1, y1 = xy.max(axis=0)
        persons.append({"keypoints": kps, "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]})
    return img, persons
