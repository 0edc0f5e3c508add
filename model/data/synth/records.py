"""Synthetic records per task, in the canonical raw form the adapters read (PIL images, text, arrays
as file bytes). ``writers`` serialises exactly these into the published on-disk formats; the
``synthetic`` source format serves them directly, generated on the fly from (seed, index).
"""
from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
from PIL import Image

from unigen.model.data.permute import hash_ints
from unigen.model.data.synth import people
from unigen.model.data.synth.prompts import single_object_caption, training_caption
from unigen.model.data.synth.scenes import (COLOURS, Scene, describe, random_background,
                                            random_scene, random_shape, render, with_article)

TASK_IDS = {t: i for i, t in enumerate(("t2i", "edit", "interleaved", "multi_image", "depth", "normal",
                                        "pose", "segmentation", "grounding", "t2i-single"))}
SIZE = (96, 80)  # width, height: not square, so the loader's centre crop is exercised


def rng_for(seed: int, task: str, index: int) -> np.random.Generator:
    return np.random.default_rng(hash_ints(seed, TASK_IDS[task], index))


def pil(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(rgb, "RGB")


def png_bytes(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG") if mode else Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


# -- edits -----------------------------------------------------------------------------------------

def random_edit(rng: np.random.Generator, scene: Scene) -> tuple[str, Scene]:
    """(instruction, edited scene): recolour, add or remove a shape, or change the background."""
    shapes = list(scene.shapes)
    ops = ["background"] + (["recolour"] if shapes else []) + (["add"] if len(shapes) < 4 else []) + \
        (["remove"] if len(shapes) >= 2 else [])
    op = ops[int(rng.integers(len(ops)))]
    if op == "recolour":
        k = int(rng.integers(len(shapes)))
        old = shapes[k]
        taken = {(s.colour, s.kind) for s in shapes}
        colours = [c for c in COLOURS if (c, old.kind) not in taken and c != scene.background]
        new = colours[int(rng.integers(len(colours)))]
        shapes[k] = replace(old, colour=new)
        return f"make the {old.colour} {old.kind} {new}", scene.with_shapes(shapes)
    if op == "add":
        s = random_shape(rng, scene.width, scene.height, {(x.colour, x.kind) for x in shapes}, shapes,
                         background=scene.background)
        if s is not None:
            return f"add {with_article(s.name)}", scene.with_shapes(shapes + [s])
    if op == "remove":
        k = int(rng.integers(len(shapes)))
        gone = shapes.pop(k)
        return f"remove the {gone.colour} {gone.kind}", scene.with_shapes(shapes)
    bg = random_background(rng, avoid={scene.background, *(x.colour for x in shapes)})
    return f"change the background to {bg}", replace(scene, background=bg)


def edit_session(rng: np.random.Generator, turns: int) -> tuple[Image.Image, list[tuple[str, Image.Image]]]:
    scene = random_scene(rng, *SIZE)
    first = pil(render(scene)["rgb"])
    out = []
    for _ in range(turns):
        instruction, scene = random_edit(rng, scene)
        out.append((instruction, pil(render(scene)["rgb"])))
    return first, out


# -- one generator per task --------------------------------------------------------------------------

def t2i(seed: int, i: int, single: bool = False) -> dict:
    """A captioned picture; ``single``: one coloured shape on a named wall (the t2i-single stream)."""
    rng = rng_for(seed, "t2i-single" if single else "t2i", i)
    scene, caption = (single_object_caption if single else training_caption)(rng, SIZE[1], SIZE[1])
    return {"image": pil(render(scene)["rgb"]), "caption": caption}


def edit(seed: int, i: int, turns: int = 1) -> dict:
    rng = rng_for(seed, "edit", i)
    source, steps = edit_session(rng, turns)
    if turns == 1:
        return {"source_image": source, "instruction": steps[0][0], "target_image": steps[0][1]}
    return {"source_image": source, "instructions": [s[0] for s in steps], "target_images": [s[1] for s in steps]}


def interleaved(seed: int, i: int, images: int = 3) -> dict:
    """OBELICS-style aligned lists: text, image, text, image, ..."""
    rng = rng_for(seed, "interleaved", i)
    scene = random_scene(rng, *SIZE)
    texts: list = [f"Here is {describe(scene, rng)}.", None]
    imgs: list = [None, pil(render(scene)["rgb"])]
    for k in range(images - 1):
        instruction, scene = random_edit(rng, scene)
        texts += [("Next, " if k == 0 else "Then ") + instruction + ".", None]
        imgs += [None, pil(render(scene)["rgb"])]
    return {"texts": texts, "images": imgs}


def multi_image(seed: int, i: int) -> dict:
    rng = rng_for(seed, "multi_image", i)
    w, h = SIZE
    bg = random_background(rng, avoid={"white"})
    a = random_shape(rng, w, h, set(), background=bg)
    b = random_shape(rng, w, h, {(a.colour, a.kind)}, [a], background=bg)
    first = Scene(w, h, bg, (a,))
    second = Scene(w, h, "white", (b,))
    both = Scene(w, h, bg, (a, b))
    return {"source_images": [pil(render(first)["rgb"]), pil(render(second)["rgb"])],
            "prompt": f"Put the {b.name} from the second image into the first image.",
            "target_image": pil(render(both)["rgb"])}


def dense(seed: int, i: int, task: str) -> dict:
    """Scene + its ground truth: depth (float .npy metres), normal (RGB PNG), segmentation (class PNG)."""
    rng = rng_for(seed, task, i)
    scene = random_scene(rng, *SIZE, n_min=2, n_max=3)
    gt = render(scene)
    record = {"image": pil(gt["rgb"])}
    if task == "depth":
        record["depth"] = npy_bytes(gt["depth"])
    elif task == "normal":
        record["normal"] = png_bytes(np.rint((gt["normal"] + 1.0) * 127.5).astype(np.uint8))
    elif task == "segmentation":
        record["label"] = png_bytes(gt["classes"])
    record["_gt"] = gt  # kept for writers/tests; adapters ignore unknown keys
    return record


def pose(seed: int, i: int) -> dict:
    rng = rng_for(seed, "pose", i)
    img, persons = people.draw_people(rng, *SIZE)
    return {"image": img, "persons": persons}


def grounding(seed: int, i: int) -> dict:
    rng = rng_for(seed, "grounding", i)
    scene = random_scene(rng, *SIZE, n_min=2, n_max=3)
    k = int(rng.integers(len(scene.shapes)))
    target = scene.shapes[k]
    same_kind = sum(s.kind == target.kind for s in scene.shapes)
    short = f"the {target.kind}" if same_kind == 1 else f"the {target.name}"
    return {"image": pil(render(scene)["rgb"]), "bbox": [round(v, 2) for v in target.bbox_xywh()],
            "sentences": [f"the {target.name}", short]}


def make(task: str, seed: int, i: int, **options) -> dict:
    """The record ``i`` of ``task``'s synthetic stream."""
    if task == "t2i":
        return t2i(seed, i)
    if task == "edit":
        return edit(seed, i, int(options.get("turns", 1)))
    if task == "interleaved":
        return interleaved(seed, i, int(options.get("images", 3)))
    if task == "multi_image":
        return multi_image(seed, i)
    if task in ("depth", "normal", "segmentation"):
        rec = dense(seed, i, task)
        rec.pop("_gt")
        return rec
    if task == "pose":
        return pose(seed, i)
    if task == "grounding":
        return grounding(seed, i)
    raise ValueError(f"no synthetic generator for task {task!r}")

