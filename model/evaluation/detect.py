"""A classical detector of the shapes world: what a picture holds, read back from its pixels.

GenEval scores a text-to-image model by running a detector on its pictures; the shapes world can be read
exactly without a learned one, because its parts are few and fixed (``unigen.model.data.synth.scenes``):
a plain wall of one of four colours and shapes of eight colours and three kinds that never touch.

``read_image(image)`` finds, in order:
1. the wall: the median colour of the image's border, named by the nearest wall colour;
2. the shapes: pixels far from that measured wall colour, opened with a 3 x 3 square (which removes the
   one-pixel specks and seams a generator leaves) and split into 4-connected blobs of a minimum area;
3. each blob's colour: the median of its interior (the blob less a one-pixel rim, where a blurred edge
   mixes with the wall), named by the nearest shape colour at any shading the world uses (spheres are
   shaded 0.75-1.0);
4. each blob's outline, redrawn at the midpoint between the wall and the blob's own colour (a fixed
   distance from the wall would make a bright shape on a dark wall fatter than a dark one), and its kind
   from three numbers of that outline's box: the filled share of the box and of its top and bottom
   corners (the triangles cut off by a line at 30 % of the side from each corner). A square fills all of
   them, a circle its box's middle but no corner, an upward triangle half its box and its bottom corners
   only; the nearest of those three prototypes names the kind. (Intersection-over-union with drawn
   templates does not separate a 16-pixel circle from a square: pixelation squares a small disc off.)
On the world's own pictures it is right for every shape (tests/unit/evaluation/test_eval_detect.py), and on
the tiny autoencoder's reconstructions ``bench/tiny_world.py`` prints how often it still is.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unigen.model.data.synth.scenes import BACKGROUNDS, COLOURS, SHADE_MIN

CORNER = 0.3  # corner triangles: legs of 30 % of the box side
# (box fill, top corners, bottom corners) of each kind drawn exactly: pi/4 and no corner for a circle; a
# full box for a square; half the box, no top corner and ~3/4 of the bottom corners for a triangle.
PROTOTYPES = {"circle": (0.785, 0.0, 0.0), "square": (1.0, 1.0, 1.0), "triangle": (0.5, 0.0, 0.75)}
FOREGROUND_DISTANCE = 45.0  # RGB distance from the wall above which a pixel belongs to a shape
MIN_AREA_FRACTION = 0.008  # blobs smaller than this share of the image are noise (33 px at 64 x 64)


@dataclass(frozen=True)
class Detection:
    kind: str
    colour: str
    cx: float
    cy: float
    area: int
    box: tuple[int, int, int, int]
    """x0, y0, x1, y1 (exclusive) in pixels."""
    features: tuple[float, float, float]
    """(box fill, top corners fill, bottom corners fill) of the outline: what the kind was read from."""

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"


@dataclass(frozen=True)
class Reading:
    background: str
    objects: tuple[Detection, ...]

    def of_kind(self, kind: str) -> list[Detection]:
        return [o for o in self.objects if o.kind == kind]

    def largest(self) -> Detection | None:
        return max(self.objects, key=lambda o: o.area, default=None)


def read_image(image) -> Reading:
    """The wall colour and every shape of a picture (PIL image or HxWx3 uint8 array)."""
    from scipy import ndimage

    rgb = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, np.float64)[..., :3]
    if rgb.ndim != 3 or min(rgb.shape[:2]) < 8:
        raise ValueError(f"read_image: expected an RGB image of at least 8 x 8 pixels, got shape {rgb.shape}")
    wall = _border_median(rgb)
    background = _nearest(wall, BACKGROUNDS)
    foreground = np.linalg.norm(rgb - wall, axis=-1) > FOREGROUND_DISTANCE
    foreground = ndimage.binary_opening(foreground, structure=np.ones((3, 3), bool))
    labels, count = ndimage.label(foreground)
    min_area = MIN_AREA_FRACTION * rgb.shape[0] * rgb.shape[1]
    objects = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        area = int((labels[box] == index).sum())
        if area < min_area:
            continue
        objects.append(_describe_blob(rgb, wall, labels == index, (labels != 0) & (labels != index), area))
    objects.sort(key=lambda o: (o.cx, o.cy))
    return Reading(background, tuple(objects))


def _describe_blob(rgb: np.ndarray, wall: np.ndarray, blob: np.ndarray, others: np.ndarray,
                   area: int) -> Detection:
    from scipy import ndimage

    inner = ndimage.binary_erosion(blob)
    colour_value = np.median(rgb[inner if inner.any() else blob], axis=0)
    colour = _nearest_shaded(colour_value)
    outline = _outline(rgb, wall, colour_value, blob) & ~others
    ys, xs = np.nonzero(outline)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    features = _box_features(outline[y0:y1, x0:x1])
    return Detection(kind=_nearest_kind(features), colour=colour, cx=float(xs.mean() + 0.5),
                     cy=float(ys.mean() + 0.5), area=area, box=(int(x0), int(y0), int(x1), int(y1)),
                     features=features)


def _outline(rgb: np.ndarray, wall: np.ndarray, colour: np.ndarray, blob: np.ndarray) -> np.ndarray:
    """The blob's pixels nearer its own colour than the wall, within two pixels of the blob (the caller
    removes pixels of other blobs)."""
    from scipy import ndimage

    near = ndimage.binary_dilation(blob, iterations=2)
    axis = colour - wall
    t = ((rgb - wall) @ axis) / max(float(axis @ axis), 1e-9)
    outline = near & (t > 0.5)
    return outline if outline.any() else blob


def _nearest_shaded(colour: np.ndarray) -> str:
    """The shape colour nearest ``colour`` at its best shading in [SHADE_MIN, 1]."""
    best, best_distance = "", np.inf
    for name, value in COLOURS.items():
        p = np.asarray(value, np.float64)
        shade = np.clip(float(colour @ p) / float(p @ p), SHADE_MIN, 1.0)
        distance = float(np.linalg.norm(colour - shade * p))
        if distance < best_distance:
            best, best_distance = name, distance
    return best


def _border_median(rgb: np.ndarray, width: int = 2) -> np.ndarray:
    border = np.concatenate([rgb[:width].reshape(-1, 3), rgb[-width:].reshape(-1, 3),
                             rgb[:, :width].reshape(-1, 3), rgb[:, -width:].reshape(-1, 3)])
    return np.median(border, axis=0)


def _nearest(colour: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    distances = np.linalg.norm(np.asarray([palette[n] for n in names], np.float64) - colour, axis=1)
    return names[int(distances.argmin())]


def _box_features(mask: np.ndarray) -> tuple[float, float, float]:
    """Filled share of the box, of its two top corners and of its two bottom corners."""
    h, w = mask.shape
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    cut = CORNER * (w + h) / 2

    def filled(region: np.ndarray) -> float:
        return float(mask[region].mean()) if region.any() else 0.0

    top = (filled(xs + ys < cut) + filled((w - xs) + ys < cut)) / 2
    bottom = (filled(xs + (h - ys) < cut) + filled((w - xs) + (h - ys) < cut)) / 2
    return float(mask.mean()), top, bottom


def _nearest_kind(features: tuple[float, float, float]) -> str:
    distances = {k: float(np.linalg.norm(np.subtract(features, p))) for k, p in PROTOTYPES.items()}
    return min(distances, key=distances.get)
