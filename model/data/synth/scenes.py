"""Procedural scenes of coloured shapes with exact ground truth (the synthetic corpus's raw material).

A scene is a background wall at ``WALL_DEPTH`` metres plus a few shapes in front of it: circles are
spheres (shaded, with curved depth and normals), squares and triangles are flat cut-outs facing the
camera. Everything (RGB, depth, normals, class ids, boxes) is computed from the same pixel masks, so
the ground truth matches the picture exactly. Randomness comes only from the ``rng`` passed in.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

COLOURS = {
    "red": (215, 45, 40), "green": (40, 165, 65), "blue": (45, 85, 215), "yellow": (235, 200, 35),
    "orange": (240, 130, 25), "cyan": (40, 195, 205), "purple": (120, 55, 170), "brown": (130, 80, 40),
}
# Plain colour words, so a prompt like "a red circle on a blue background" names a colour the world has.
# The blue wall is darker than a blue shape (distance ~90 in RGB) and no shape takes its wall's colour.
BACKGROUNDS = {"white": (236, 236, 236), "gray": (128, 128, 128), "black": (24, 24, 24),
               "blue": (30, 50, 130)}
KINDS = ("circle", "square", "triangle")
CLASS_NAMES = ("background", "circle", "square", "triangle")  # class ids of the segmentation maps
WALL_DEPTH = 8.0  # metres
# Shape radius (half side) as a fraction of the image's shorter side: at 64 px, 7.7 to 12.8 px, so a
# shape spans 2-3 cells of an f8 latent and a detector (unigen.model.evaluation.detect) reads it back.
RADIUS_RANGE = (0.12, 0.20)
GAP = 3.0  # pixels between the boxes of two shapes: shapes never touch, so each is one blob
# Spheres are shaded 0.75-1.0, enough to read as round without the rim's colour drifting to a neighbour's.
SHADE_MIN = 0.75


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    cx: float
    cy: float
    r: float  # radius / half side, pixels
    depth: float  # metres, front of the shape

    def bbox_xywh(self) -> list[float]:
        """COCO box [x, y, w, h] in pixels (pixel edges: a shape spanning columns 3..6 has x=3, w=4)."""
        return [self.cx - self.r, self.cy - self.r, 2 * self.r, 2 * self.r]

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"


@dataclass(frozen=True)
class Scene:
    width: int
    height: int
    background: str
    shapes: tuple[Shape, ...] = field(default_factory=tuple)

    def with_shapes(self, shapes) -> "Scene":
        return replace(self, shapes=tuple(shapes))


def separated(a: Shape, b: Shape, gap: float = GAP) -> bool:
    """Whether the boxes of two shapes are at least ``gap`` pixels apart (along x or y)."""
    return abs(a.cx - b.cx) >= a.r + b.r + gap or abs(a.cy - b.cy) >= a.r + b.r + gap


def place(rng: np.random.Generator, w: int, h: int, others=(), tries: int = 60,
          where=None) -> tuple[float, float, float] | None:
    """(cx, cy, r) of a new shape inside the image and apart from ``others``; ``where(cx, cy)`` may
    restrict the position (e.g. right of another shape). None when no place is found."""
    side = min(w, h)
    lo, hi = RADIUS_RANGE
    for _ in range(tries):
        r = float(np.round(rng.uniform(lo, hi) * side, 1))
        margin = int(np.ceil(r)) + 1
        if w - margin <= margin or h - margin <= margin:
            continue
        cx = float(rng.integers(margin, w - margin + 1))
        cy = float(rng.integers(margin, h - margin + 1))
        probe = Shape("square", "red", cx, cy, r, 0.0)
        if all(separated(probe, o) for o in others) and (where is None or where(cx, cy)):
            return cx, cy, r
    return None


def random_shape(rng: np.random.Generator, w: int, h: int, taken: set, others=(), colour: str | None = None,
                 kind: str | None = None, background: str | None = None, where=None) -> Shape | None:
    """A shape of an unused (colour, kind) pair (or the given colour/kind), placed apart from the others;
    never the colour of ``background``."""
    free = [(c, k) for c in COLOURS for k in KINDS if (c, k) not in taken
            and (colour is None or c == colour) and (kind is None or k == kind) and c != background]
    if not free:
        return None
    colour, kind = free[int(rng.integers(len(free)))]
    spot = place(rng, w, h, others, where=where)
    if spot is None:
        return None
    cx, cy, r = spot
    return Shape(kind, colour, cx, cy, r, depth=round(float(rng.uniform(1.5, 6.0)), 2))


def random_background(rng: np.random.Generator, avoid=()) -> str:
    names = [b for b in BACKGROUNDS if b not in avoid]
    return names[int(rng.integers(len(names)))]


def random_scene(rng: np.random.Generator, w: int, h: int, n_min: int = 1, n_max: int = 3) -> Scene:
    bg = random_background(rng)
    shapes: list[Shape] = []
    for _ in range(int(rng.integers(n_min, n_max + 1))):
        s = random_shape(rng, w, h, {(x.colour, x.kind) for x in shapes}, shapes, background=bg)
        if s is not None:
            shapes.append(s)
    return Scene(w, h, bg, tuple(shapes))


def _grid(scene: Scene):
    ys, xs = np.mgrid[0:scene.height, 0:scene.width].astype(np.float32)
    return xs + 0.5, ys + 0.5  # pixel centres


def shape_mask(shape: Shape, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    dx, dy = xs - shape.cx, ys - shape.cy
    if shape.kind == "circle":
        return dx * dx + dy * dy <= shape.r * shape.r
    if shape.kind == "square":
        return (np.abs(dx) <= shape.r) & (np.abs(dy) <= shape.r)
    # Upward triangle with apex at the top centre and base on the box's bottom edge.
    inside_y = (dy >= -shape.r) & (dy <= shape.r)
    half_width = (dy + shape.r) / 2.0  # grows from 0 at the apex to r at the base
    return inside_y & (np.abs(dx) <= half_width)


def render(scene: Scene) -> dict[str, np.ndarray]:
    """rgb uint8 HxWx3, depth float32 HxW (m), normal float32 HxWx3 (unit, OpenGL camera frame:
    x right, y up, z toward the viewer), classes uint8 HxW (CLASS_NAMES ids)."""
    xs, ys = _grid(scene)
    h, w = scene.height, scene.width
    rgb = np.empty((h, w, 3), np.float32)
    rgb[:] = BACKGROUNDS[scene.background]
    depth = np.full((h, w), WALL_DEPTH, np.float32)
    normal = np.zeros((h, w, 3), np.float32)
    normal[..., 2] = 1.0
    classes = np.zeros((h, w), np.uint8)
    for shape in sorted(scene.shapes, key=lambda s: -s.depth):  # far to near: near ones occlude
        mask = shape_mask(shape, xs, ys)
        colour = np.asarray(COLOURS[shape.colour], np.float32)
        if shape.kind == "circle":
            dx = (xs - shape.cx) / shape.r
            dy = (ys - shape.cy) / shape.r
            nz = np.sqrt(np.clip(1.0 - dx * dx - dy * dy, 0.0, 1.0))
            n = np.stack([dx, -dy, nz], axis=-1)  # image y points down, camera y up
            metres_per_px = 0.02
            d = shape.depth + (1.0 - nz) * shape.r * metres_per_px
            shade = (SHADE_MIN + (1.0 - SHADE_MIN) * nz)[..., None]
            rgb[mask] = (colour * shade)[mask]
            normal[mask] = n[mask]
            depth[mask] = d[mask]
        else:
            rgb[mask] = colour
            normal[mask] = (0.0, 0.0, 1.0)
            depth[mask] = shape.depth
        classes[mask] = CLASS_NAMES.index(shape.kind)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    return {"rgb": np.clip(rgb + 0.5, 0, 255).astype(np.uint8), "depth": depth, "normal": normal,
            "classes": classes}


def with_article(word: str) -> str:
    """``word`` with its indefinite article ("an orange circle", "a red square")."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def describe(scene: Scene, rng: np.random.Generator) -> str:
    """A caption naming every shape, with a left/right relation for two or more."""
    shapes = sorted(scene.shapes, key=lambda s: s.cx)
    names = [with_article(s.name) for s in shapes]
    if not names:
        return f"an empty {scene.background} background"
    if len(names) == 1:
        body = names[0]
    elif rng.random() < 0.5:
        body = f"{names[0]} to the left of {' and '.join(names[1:])}"
    else:
        body = ", ".join(names[:-1]) + f" and {names[-1]}"
    return f"{body} on a {scene.background} background"
