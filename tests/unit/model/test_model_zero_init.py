"""Partitioned construction under ZeRO-3 (unigen.model.zero_init) on two CPU ranks: each rank holds only its
shard of the trainable parameters from construction on, the frozen parts whole, and training gives exactly
the losses of the plain build (the whole model on every rank, partitioned by deepspeed.initialize)."""
import json
import math

import pytest
import torch

from tests.services.ports import free_port
from tests.unit.model.model_helpers import run_worker_ranks, tiny_pipeline


def run_two_ranks(build, preset, init, tmp_path):
    port = free_port()
    reports = [tmp_path / f"{build}-{preset}-rank{rank}.json" for rank in (0, 1)]
    run_worker_ranks("zero_init_worker.py", lambda rank: (rank, 2, port, build, preset, init or "-", reports[rank]),
                     reports, f"{build} build of {preset} hung on two ZeRO-3 ranks")
    return [json.loads(r.read_text()) for r in reports]


@pytest.fixture(scope="module")
def stage1_weights(tmp_path_factory):
    """A consolidated state dict like stage 1 leaves (init_from): another seed's weights, so loading shows."""
    path = tmp_path_factory.mktemp("stage1") / "weights.pt"
    torch.save(tiny_pipeline(seed=1).model.state_dict(), path)
    return path


@pytest.mark.parametrize("preset, with_init", [
    ("tiny", True),  # random parts, stage-1 weights loaded into the partitioned parameters
    ("tiny-shapes", False),  # pretrained DiT from its source folder, widened for the source latents
])
def test_partitioned_build_trains_like_the_plain_build(preset, with_init, stage1_weights, tmp_path):
    init = stage1_weights if with_init else None
    plain = run_two_ranks("plain", preset, init, tmp_path)
    partitioned = run_two_ranks("partitioned", preset, init, tmp_path)

    for rank in (0, 1):
        # Same seed, same construction order and RNG stream, same loaded weights: bit-identical losses.
        assert partitioned[rank]["losses"] == plain[rank]["losses"], rank
        assert all(math.isfinite(loss) and loss > 0 for loss in plain[rank]["losses"])
        held = partitioned[rank]["construction"]
        trainable = [p for p in held if p["trainable"]]
        frozen = [p for p in held if not p["trainable"]]
        assert trainable and frozen
        # Right after construction, before deepspeed.initialize: a shard of every trainable parameter...
        for p in trainable:
            assert p["partitioned"] and p["data"] == 0, p
            assert p["local"] == math.ceil(p["full"] / 2), p
        # ...and the frozen parts whole, as the plain build holds everything.
        assert all(not p["partitioned"] and p["local"] == p["full"] for p in frozen)
        assert all(not p["partitioned"] for p in plain[rank]["construction"])
    local = sum(p["local"] for p in partitioned[0]["construction"] if p["trainable"])
    whole = sum(p["local"] for p in plain[0]["construction"] if p["trainable"])
    assert local < 0.51 * whole


def test_load_state_copies_and_names_what_does_not_match():
    from unigen.model.zero_init import load_state

    model = torch.nn.Sequential(torch.nn.Linear(2, 3))
    missing, unexpected = load_state(model, {"0.weight": torch.ones(3, 2), "extra": torch.zeros(1)}, strict=False,
                                     origin="src")
    assert (missing, unexpected) == (["0.bias"], ["extra"]) and bool((model[0].weight == 1).all())
    with pytest.raises(ValueError, match=r"src: 1 tensors missing \(e.g. \['0.bias'\]\), 1 unexpected"):
        load_state(model, {"0.weight": torch.ones(3, 2), "extra": torch.zeros(1)}, strict=True, origin="src")
    with pytest.raises(ValueError, match=r"src: 0.weight has shape \(3, 4\), the model's is \(3, 2\)"):
        load_state(model, {"0.weight": torch.zeros(3, 4)}, strict=False, origin="src")


def test_source_tensors_read_the_diffusers_folder_lazily(tmp_path):
    from unigen.model.hub import resolve_source
    from unigen.model.zero_init import source_tensors

    tensors = source_tensors(resolve_source("assets://tiny-shapes/decoder"), "transformer", None)
    name = "patch_embed.proj.weight"
    assert name in tensors and tensors.shape_of(name) == tuple(tensors[name].shape)
    (tmp_path / "transformer").mkdir()
    with pytest.raises(ValueError, match=r"transformer: no diffusion_pytorch_model.safetensors"):
        source_tensors(str(tmp_path), "transformer", None)
