"""The shapes detector reads the world's own pictures exactly, and the judges built on it (GenEval checks,
edit outcomes) accept right pictures and reject deliberately wrong ones."""
import io

import numpy as np
import pytest
from PIL import Image

from unigen.model.data.synth.prompts import FAMILIES, relation_holds, sample
from unigen.model.data.synth.scenes import COLOURS, Scene, Shape, random_scene, render
from unigen.model.evaluation import scoring
from unigen.model.evaluation.detect import read_image


def picture(scene: Scene, mode: str = "direct") -> Image.Image:
    """The scene as a picture: drawn at its size, or drawn at 80 px, JPEG-compressed and resized to 64 as
    the text-to-image records reach training."""
    image = Image.fromarray(render(scene)["rgb"])
    if mode == "jpeg80":
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=90)
        image = Image.open(buf).convert("RGB").resize((64, 64), Image.BICUBIC)
    return image


def pairs(reading):
    return sorted((o.kind, o.colour) for o in reading.objects)


@pytest.mark.parametrize("mode,side", [("direct", 64), ("jpeg80", 80)])
def test_every_shape_and_wall_of_the_worlds_pictures_is_read(mode, side):
    rng = np.random.default_rng(5)
    right = 0
    for _ in range(150):
        scene = random_scene(rng, side, side, 1, 4)
        reading = read_image(picture(scene, mode))
        right += reading.background == scene.background and pairs(reading) == sorted(
            (s.kind, s.colour) for s in scene.shapes)
    assert right == 150


def test_wrong_pictures_read_wrong():
    red_circle = Shape("circle", "red", 32, 32, 10, 2.0)
    scene = Scene(64, 64, "white", (red_circle,))
    assert pairs(read_image(picture(scene))) == [("circle", "red")]
    assert pairs(read_image(picture(scene.with_shapes([Shape("square", "red", 32, 32, 10, 2.0)])))) == [("square", "red")]
    assert pairs(read_image(picture(scene.with_shapes([Shape("circle", "blue", 32, 32, 10, 2.0)])))) == [("circle", "blue")]
    assert read_image(picture(Scene(64, 64, "black", (red_circle,)))).background == "black"
    assert read_image(picture(Scene(64, 64, "gray", ()))).objects == ()
    noise = (np.random.default_rng(0).random((64, 64, 3)) * 40 + 108).astype(np.uint8)  # gray wall, speckled
    assert read_image(noise).objects == () and read_image(noise).background == "gray"


def test_geneval_checks_accept_the_requested_scene_and_reject_others():
    rng = np.random.default_rng(1)
    for family in FAMILIES:
        for _ in range(10):
            request = sample(family, rng, 64, 64)
            reading = read_image(picture(request.scene))
            assert scoring.t2i_correct(request, reading, 64), (family, request.prompt)
            assert scoring.attributes(request, reading) == {k: True for k in scoring.attributes(request, reading)}
            other = Scene(64, 64, request.scene.background, ())  # an empty wall satisfies no family
            assert not scoring.t2i_correct(request, read_image(picture(other)), 64), (family, request.prompt)


def test_position_check_follows_the_named_side():
    assert relation_holds("to the left of", (10, 30), (40, 32), 64)
    assert not relation_holds("to the left of", (40, 30), (10, 32), 64)
    assert relation_holds("above", (30, 10), (32, 50), 64) and not relation_holds("below", (30, 10), (32, 50), 64)
    assert not relation_holds("to the left of", (30, 10), (33, 50), 64)  # vertical offset dominates


def test_colour_attribute_is_the_largest_shapes_colour():
    rng = np.random.default_rng(2)
    request = sample("colors", rng, 64, 64)
    wanted = request.objects[0]
    wrong = next(c for c in COLOURS if c != wanted.colour and c != request.scene.background)
    recoloured = request.scene.with_shapes([Shape(wanted.kind, wrong, s.cx, s.cy, s.r, s.depth)
                                            for s in request.scene.shapes])
    got = scoring.attributes(request, read_image(picture(recoloured)))
    assert got == {"background": True, "colour": False, "shape": True}


def test_edit_outcome_separates_the_change_from_the_rest():
    a, b = Shape("circle", "red", 16, 16, 9, 2.0), Shape("square", "green", 46, 46, 9, 2.0)
    source = read_image(picture(Scene(64, 64, "white", (a, b))))
    recoloured_b = Shape("square", "yellow", 46, 46, 9, 2.0)
    target = read_image(picture(Scene(64, 64, "white", (a, recoloured_b))))
    assert scoring.edit_outcome(target, target, source) == {"success": True, "change": True, "rest": True}
    assert scoring.edit_outcome(source, target, source) == {"success": False, "change": False, "rest": True}
    broke_rest = read_image(picture(Scene(64, 64, "white", (recoloured_b,))))
    assert scoring.edit_outcome(broke_rest, target, source) == {"success": False, "change": True, "rest": False}
    new_wall = read_image(picture(Scene(64, 64, "black", (a, recoloured_b))))
    assert scoring.edit_outcome(new_wall, target, source) == {"success": False, "change": True, "rest": False}
