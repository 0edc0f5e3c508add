"""``unigen data encode`` with the tiny model: stored latents are what the model computes from the
very pixels the processor builds for the same batch."""
from types import SimpleNamespace

import pytest

from tests.unit.data.data_helpers import spec_for
from tests.unit.data.test_data_cli import cli
from unigen.model.data.errors import DataError
from unigen.model.data.loader import build_loader


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random pipeline saved to disk: the CLI and the test must use the very same weights."""
    from unigen.model import UniGenPipeline
    folder = tmp_path_factory.mktemp("tiny-model")
    UniGenPipeline.from_preset("tiny").save_pretrained(folder)
    return UniGenPipeline.from_pretrained(folder), folder


def test_encoded_latents_reach_the_processor_and_match_the_model(corpus, tiny, tmp_path, capsys):
    import torch
    root, manifest = corpus
    tiny, model_dir = tiny
    out = tmp_path / "latents-mb"
    assert cli("encode", f"{root}/edit/magicbrush", "--task", "edit", "--pretrained", model_dir, "--out", out,
               "--batch-size", 5) == 0
    assert "encoded 24 targets of 8 records" in capsys.readouterr().out
    size = tiny.model.config.image_size
    mb = next(s for s in manifest["sources"] if s["name"] == "shapes-magicbrush")
    spec = spec_for([{**mb, "options": {"latents": str(out)}}], image_size=size)
    loader = build_loader(spec, tiny.processor, seed=0, global_batch_size=2, micro_batch_size=2, rank=0,
                          world_size=1)
    batch = loader.next_step()[0]
    assert batch["gen_latents"] is not None and batch["gen_latents"].shape[0] == 6  # 2 sessions x 3 turns
    # The same step's conversations (same spec and seed), encoded now from the processor's pixels.
    from unigen.model.images import to_pixels
    same = build_loader(spec, lambda convs: convs, seed=0, global_batch_size=2, micro_batch_size=2, rank=0,
                        world_size=1).next_step()[0]
    targets = [it for conv in same for m in conv for it in m["content"] if it["type"] == "image_gen"]
    assert all("latents" in it for it in targets)
    with torch.no_grad():
        fresh = tiny.model.encode_latents(torch.stack([to_pixels(it["image"], size) for it in targets]))
    scale = fresh.abs().max().item()
    assert torch.allclose(batch["gen_latents"].float(), fresh, atol=2e-3 * scale + 1e-3)  # stored as float16
    loss = tiny.model(**batch).loss
    assert torch.isfinite(loss)

    with pytest.raises(DataError, match=r"encoded at \d+ px but data.image_size is 32"):
        build_loader(spec_for([{**mb, "options": {"latents": str(out)}}], image_size=32), tiny.processor,
                     seed=0, global_batch_size=2, micro_batch_size=2, rank=0, world_size=1)
    ip2p = next(s for s in manifest["sources"] if s["name"] == "shapes-ip2p")
    with pytest.raises(DataError, match=r"a batch must be all-latents or all-pixels"):
        build_loader(spec_for([{**mb, "options": {"latents": str(out)}}, ip2p], image_size=size),
                     tiny.processor, seed=0, global_batch_size=2, micro_batch_size=2, rank=0, world_size=1)


def test_every_synthetic_source_collates_with_the_model_processor(corpus, tiny):
    import torch
    _, manifest = corpus
    tiny, _ = tiny
    spec = spec_for(manifest["sources"], image_size=tiny.model.config.image_size)
    loader = build_loader(spec, tiny.processor, seed=1, global_batch_size=16, micro_batch_size=4, rank=0,
                          world_size=1)
    slots = 0
    for _ in range(4):  # 64 samples over 16 sources
        for batch in loader.next_step():
            assert batch["input_ids"].shape[0] == 4
            size = tiny.model.config.image_size
            assert tuple(batch["gen_pixel_values"].shape[1:]) == (3, size, size)
            slots += int(batch["gen_slot_has_target"].sum())
    assert slots >= 64 and loader.stats()["bad"] == 0
    assert len([n for n, s in loader.stats()["sources"].items() if s["served"]]) >= 12
    with torch.no_grad():
        assert torch.isfinite(tiny.model(**batch).loss)


def test_latents_name_the_vae_that_encoded_them(corpus, tiny, tmp_path):
    """Latents of another VAE have the same shape and are still wrong targets: training refuses them."""
    import torch

    from unigen.model.data.latents import LatentStore
    from unigen.orchestrator.errors import UserError
    from unigen.orchestrator.runtime.trainer import Trainer
    root, manifest = corpus
    tiny, model_dir = tiny
    out = tmp_path / "latents-ip2p"
    assert cli("encode", f"{root}/edit/instructpix2pix", "--task", "edit", "--pretrained", model_dir,
               "--out", out) == 0
    store = LatentStore.open(str(out), image_size=tiny.model.config.image_size)
    store.check_model(tiny.model.vae_fingerprint(), where="data.sources[0]")  # the encoder's own VAE: fine
    weight = next(tiny.model.vae.parameters())
    with torch.no_grad():
        weight.add_(1e-3)
    try:
        with pytest.raises(DataError, match=r"data.sources\[0\].options.latents: .* was encoded by another VAE"):
            store.check_model(tiny.model.vae_fingerprint(), where="data.sources[0]")
        # The runtime makes it a user error (exit 2, no restart), naming the recipe's source.
        ip2p = next(s for s in manifest["sources"] if s["name"] == "shapes-ip2p")
        spec = spec_for([{**ip2p, "options": {"latents": str(out)}}], image_size=tiny.model.config.image_size)
        loader = build_loader(spec, tiny.processor, seed=0, global_batch_size=2, micro_batch_size=2, rank=0,
                              world_size=1)
        with pytest.raises(UserError, match=r"data.sources\[0\].options.latents: .* another VAE"):
            Trainer._check_latents(SimpleNamespace(loader=loader, pipe=tiny))
    finally:
        with torch.no_grad():
            weight.sub_(1e-3)
    store.meta.pop("vae_sha256")
    with pytest.raises(DataError, match=r"does not say which VAE encoded it"):
        store.check_model(tiny.model.vae_fingerprint(), where="data.sources[0]")
