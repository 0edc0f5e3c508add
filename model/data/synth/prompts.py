"""Prompts of the shapes world in GenEval's categories, each with a scene that satisfies it.

GenEval (Ghosh et al., 2023) scores text-to-image models on single objects, two objects, counting,
colours, positions and colour attribution, by detecting what an image holds. Here the same categories are
written about coloured shapes: ``sample(family, rng, w, h)`` returns a ``Request``, the prompt text plus
what it asks for (kinds, colours, count, relation, background) and one scene that satisfies it. The
synthetic text-to-image records are drawn from these families (``training_caption``), and the evaluation
(``unigen.model.evaluation``) asks the model for held-out requests and checks the detected image against
what was asked, so both speak the same language.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unigen.model.data.synth.scenes import (COLOURS, KINDS, Scene, Shape, describe, random_background,
                                            random_scene, random_shape, with_article)

FAMILIES = ("single_object", "colors", "two_object", "counting", "position", "color_attr")
RELATIONS = ("to the left of", "to the right of", "above", "below")
COUNT_WORDS = {2: "two", 3: "three"}
# How often each kind of caption appears in the synthetic text-to-image data: full scene descriptions
# (every shape with its colour), the GenEval families, and the share that leaves the background unsaid
# (the model then learns to pick one itself, as for a real caption that does not mention it). Single
# coloured objects weigh most: a tiny model learns colour and wall from them in a few thousand steps, and
# the rest builds on that (with full descriptions at 0.3 and single objects at 0.2, colour accuracy was
# 0.2-0.46 after 96k samples; on single objects alone, 0.69 after 32k).
TRAIN_WEIGHTS = {"scene": 0.15, "single_object": 0.1, "colors": 0.3, "two_object": 0.1, "counting": 0.1,
                 "position": 0.1, "color_attr": 0.15}
NO_BACKGROUND_SHARE = 0.15


@dataclass(frozen=True)
class Wanted:
    """One object a prompt asks for: its kind and, when the prompt names it, its colour."""

    kind: str
    colour: str | None = None


@dataclass(frozen=True)
class Request:
    family: str
    prompt: str
    background: str | None
    """The background the prompt names (None: not named)."""
    objects: tuple[Wanted, ...]
    """The objects named, in the prompt's order (a counting prompt names its kind once)."""
    scene: Scene
    """One scene that satisfies the prompt (what the training image shows)."""
    count: int | None = None
    relation: str | None = None
    """position: objects[0] <relation> objects[1]."""
    extra: dict = field(default_factory=dict)


def _on(background: str | None) -> str:
    return f" on a {background} background" if background else ""


def _relation_holds(relation: str, a: tuple[float, float], b: tuple[float, float], margin: float) -> bool:
    """Whether a point a is <relation> b: the named axis dominates and differs by at least ``margin``."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    if relation in ("to the left of", "to the right of"):
        along = dx if relation == "to the left of" else -dx
        return along >= margin and along > abs(dy)
    along = dy if relation == "above" else -dy  # image y grows downwards
    return along >= margin and along > abs(dx)


def relation_holds(relation: str, a: tuple[float, float], b: tuple[float, float], side: float) -> bool:
    """The position check of the evaluation: centres, a margin of 5 % of the image side."""
    return _relation_holds(relation, a, b, 0.05 * side)


def _shapes(rng, w, h, bg, wanted: list[Wanted], where=None) -> list[Shape] | None:
    shapes: list[Shape] = []
    for i, want in enumerate(wanted):
        cond = where(shapes) if (where is not None and i == 1) else None
        s = random_shape(rng, w, h, {(x.colour, x.kind) for x in shapes}, shapes, colour=want.colour,
                         kind=want.kind, background=bg, where=cond)
        if s is None:
            return None
        shapes.append(s)
    return shapes


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _colour(rng, bg: str, exclude=()) -> str:
    return _pick(rng, [c for c in COLOURS if c != bg and c not in exclude])


def sample(family: str, rng: np.random.Generator, w: int, h: int, background: bool = True) -> Request:
    """A request of ``family`` with a scene of size w x h satisfying it (``background``: name the wall)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown prompt family {family!r}; choose one of {list(FAMILIES)}")
    for _ in range(100):  # a crowded draw (no room for a shape) is drawn again
        bg = random_background(rng)
        said = bg if background else None
        request = _build(family, rng, w, h, bg, said)
        if request is not None:
            return request
    raise RuntimeError(f"could not place a {family} scene in {w}x{h}")


def _build(family, rng, w, h, bg, said) -> Request | None:
    k1, k2 = (str(k) for k in rng.permutation(KINDS)[:2])
    if family in ("single_object", "colors"):
        want = [Wanted(k1, _colour(rng, bg) if family == "colors" else None)]
        shapes = _shapes(rng, w, h, bg, want)
        if shapes is None:
            return None
        name = f"{want[0].colour} {k1}" if family == "colors" else k1
        return Request(family, f"{with_article(name)}{_on(said)}", said, tuple(want), Scene(w, h, bg, tuple(shapes)))
    if family in ("two_object", "color_attr"):
        c1 = _colour(rng, bg)
        want = [Wanted(k1, c1 if family == "color_attr" else None),
                Wanted(k2, _colour(rng, bg, (c1,)) if family == "color_attr" else None)]
        shapes = _shapes(rng, w, h, bg, want)
        if shapes is None:
            return None
        names = [f"{x.colour} {x.kind}" if x.colour else x.kind for x in want]
        prompt = f"{with_article(names[0])} and {with_article(names[1])}{_on(said)}"
        return Request(family, prompt, said, tuple(want), Scene(w, h, bg, tuple(shapes)))
    if family == "counting":
        n = int(_pick(rng, sorted(COUNT_WORDS)))
        shapes = _shapes(rng, w, h, bg, [Wanted(k1)] * n)
        if shapes is None:
            return None
        return Request(family, f"{COUNT_WORDS[n]} {k1}s{_on(said)}", said, (Wanted(k1),),
                       Scene(w, h, bg, tuple(shapes)), count=n)
    # position: objects[0] <relation> objects[1]
    relation = str(_pick(rng, RELATIONS))
    margin = 0.05 * min(w, h)
    want = [Wanted(k2), Wanted(k1)]  # place the reference (objects[1]) first, then the other relative to it
    shapes = _shapes(rng, w, h, bg, want, where=lambda placed: (
        lambda cx, cy: _relation_holds(relation, (cx, cy), (placed[0].cx, placed[0].cy), margin)))
    if shapes is None:
        return None
    ref, other = shapes
    prompt = f"{with_article(k1)} {relation} {with_article(k2)}{_on(said)}"
    return Request("position", prompt, said, (Wanted(k1), Wanted(k2)), Scene(w, h, bg, (other, ref)),
                   relation=relation)


def single_object_caption(rng: np.random.Generator, w: int, h: int) -> tuple[Scene, str]:
    """(scene, caption) of one coloured shape on a named wall: "a red circle on a blue background".

    The first lesson of a curriculum: a tiny model trained mostly on these learns to draw the shape in the
    asked colour far sooner than on the full mix (runbooks/evaluation.md, "Measured on 2 CPU cores")."""
    request = sample("colors", rng, w, h, background=True)
    return request.scene, request.prompt


def training_caption(rng: np.random.Generator, w: int, h: int) -> tuple[Scene, str]:
    """(scene, caption) for a synthetic text-to-image record, drawn from TRAIN_WEIGHTS."""
    names = list(TRAIN_WEIGHTS)
    family = names[int(rng.choice(len(names), p=np.asarray(list(TRAIN_WEIGHTS.values())) /
                                  sum(TRAIN_WEIGHTS.values())))]
    background = bool(rng.random() >= NO_BACKGROUND_SHARE)
    if family == "scene":
        scene = random_scene(rng, w, h)
        caption = describe(scene, rng)
        if not background:
            caption = caption.rsplit(" on a ", 1)[0]
        return scene, caption
    request = sample(family, rng, w, h, background=background)
    return request.scene, request.prompt
