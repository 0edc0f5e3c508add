"""The pretrained tiny world shipped in the package (model/assets/tiny-shapes): loaded through the same
from_pretrained path as the hub checkpoints, frozen, and good at what the smoke model needs from it (the
autoencoder keeps shapes, the backbone reads a request into the query slots); the build script is
deterministic."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def shapes_pipe():
    from unigen.model import UniGenPipeline

    return UniGenPipeline.from_preset("tiny-shapes")


def test_the_preset_loads_the_shipped_parts_and_freezes_the_backbone(shapes_pipe):
    from diffusers import AutoencoderDC
    from transformers import Qwen2_5_VLForConditionalGeneration

    from unigen.model.hub import resolve_source

    model = shapes_pipe.model
    assert isinstance(model.backbone, Qwen2_5_VLForConditionalGeneration) and isinstance(model.vae, AutoencoderDC)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not any(p.requires_grad for p in model.vae.parameters())
    # the same weights as the shipped files: the backbone is not the random tiny one
    shipped = Qwen2_5_VLForConditionalGeneration.from_pretrained(resolve_source("assets://tiny-shapes/backbone"))
    name, param = next(iter(shipped.named_parameters()))
    assert np.allclose(dict(model.backbone.named_parameters())[name].detach().float().numpy(),
                       param.detach().float().numpy())


def test_the_autoencoder_keeps_the_shapes_the_evaluation_reads(shapes_pipe):
    """The detector reads the wall and every (kind, colour) of held-out scenes from their reconstructions:
    0.993 on 300 scenes at build time (BUILD.json); the random f8 autoencoder this replaces got 0.72."""
    from unigen.model.evaluation.detect import read_image
    from unigen.model.tinyworld.checks import heldout_scene_pictures, scene_read_right
    from unigen.model.tinyworld.vae import reconstruct

    scenes, pictures = heldout_scene_pictures(60)
    rebuilt = reconstruct(shapes_pipe.model.vae, pictures)
    assert np.mean([scene_read_right(read_image(r), s) for r, s in zip(rebuilt, scenes)]) >= 0.95


def test_the_backbone_reads_a_request_into_the_query_slots(shapes_pipe):
    """Over held-out requests and edits, the query positions predict most of the request's content words
    (0.93 at build time); a random backbone reads nothing (about the share of chance, under 0.1)."""
    from unigen.model.tinyworld import backbone as bb

    assert bb.slot_recall(shapes_pipe.model.backbone, shapes_pipe.processor, bb.BackboneSettings(), count=100) >= 0.8


def test_the_build_is_deterministic_and_ships_what_it_makes(tmp_path):
    """The transformer part (the seeded initialisation in Sana's layout) built twice gives the same bytes as
    the shipped file, and BUILD.json records how it was made."""
    from unigen.model.hub import resolve_source
    from unigen.model.tinyworld.build import main

    for out in ("a", "b"):
        assert main(["--data", str(tmp_path), "--out", str(tmp_path / out), "--parts", "transformer"]) == 0
    weights = "decoder/transformer/diffusion_pytorch_model.safetensors"
    made = (tmp_path / "a" / weights).read_bytes()
    assert made == (tmp_path / "b" / weights).read_bytes()
    assert made == (Path(resolve_source("assets://tiny-shapes")) / weights).read_bytes()
    record = json.loads((tmp_path / "a" / "BUILD.json").read_text())["transformer"]
    assert record["command"].startswith("python -m unigen.model.tinyworld --data") and record["parameters"] > 0
