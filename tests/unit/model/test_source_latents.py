"""image_latent_conditioning: each slot's source image (the last input image before it) reaches the DiT as a
latent beside its noisy latent. What must hold: the processor names the right source per slot, a pretrained
DiT widened for it starts as the same function, CFG hides the source with the images, and the setting
survives save/load."""
from __future__ import annotations

import numpy as np
import torch

from tests.unit.model.model_helpers import edit, pattern, seed_example, t2i, tiny_pipeline
from unigen.model.cfg_dropout import DROP_BOTH, DROP_IMAGE, DROP_TEXT, KEEP
from unigen.model.modeling import dit_input


def _pipe(**overrides):
    return tiny_pipeline(image_latent_conditioning=True, **overrides)


def test_processor_names_each_slots_last_input_image():
    pipe = _pipe()
    batch = pipe.processor([
        seed_example(),                                   # image0, slot (source 0), image2, slot (source 1)
        t2i("a red circle", target=pattern(5)),            # no input image: -1
        edit(pattern(6), "make it blue", target=pattern(7)),  # its own image: 2 in the batch
    ])
    assert batch["gen_slot_source_index"].tolist() == [0, 1, -1, 2]
    sources = batch["source_pixel_values"]
    assert tuple(sources.shape) == (3, 3, 64, 64)
    assert float(sources.min()) >= -1.0 and float(sources.max()) <= 1.0
    # Row 1 of the sources is the seed example's second input image (pattern(2)), not a target.
    from unigen.model.images import to_pixels
    assert torch.equal(sources[1], to_pixels(pattern(2), 64))


def test_processor_without_the_setting_adds_nothing():
    batch = tiny_pipeline().processor([edit(pattern(1), "make it blue", target=pattern(2))])
    assert "source_pixel_values" not in batch and "gen_slot_source_index" not in batch


def test_widened_dit_starts_as_the_same_function():
    """Zero-initialised source channels: a pretrained DiT keeps its predictions until training uses them."""
    import copy

    from unigen.model.components import widen_dit_input

    plain = tiny_pipeline(seed=3).model
    config = plain.config
    wide = copy.deepcopy(plain.dit)
    widen_dit_input(wide, config.latent_channels)
    assert wide.config.in_channels == 2 * config.latent_channels
    assert wide.config.out_channels == config.latent_channels
    built = _pipe().model  # what the setting builds, and what the torch-free parameter count says of it
    assert built.dit.config.in_channels == 2 * config.latent_channels
    assert built.config.parameter_counts()["dit"] == sum(p.numel() for p in built.dit.parameters())
    side = config.image_size // config.vae_compression
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, config.latent_channels, side, side, generator=gen)
    source = torch.randn(2, config.latent_channels, side, side, generator=gen)
    caption = torch.randn(2, config.num_queries, config.caption_width, generator=gen)
    t = torch.tensor([300.0, 700.0])
    with torch.no_grad():
        expected = plain.dit(hidden_states=x, encoder_hidden_states=caption, timestep=t, return_dict=False)[0]
        got = wide(hidden_states=dit_input(x, source), encoder_hidden_states=caption, timestep=t,
                   return_dict=False)[0]
    assert torch.allclose(got, expected, atol=1e-6)


def test_cfg_modes_that_hide_images_hide_the_source():
    pipe = _pipe()
    batch = pipe.processor([edit(pattern(1), "make it blue")])
    kept = pipe.model.slot_sources(batch, KEEP)
    assert float(kept.abs().sum()) > 0
    assert torch.equal(pipe.model.slot_sources(batch, DROP_TEXT), kept)
    for mode in (DROP_IMAGE, DROP_BOTH):
        assert float(pipe.model.slot_sources(batch, mode).abs().sum()) == 0.0
    # The source is the VAE latent of the input image at the model's size, as targets are encoded.
    expected = pipe.model.encode_latents(batch["source_pixel_values"])
    assert torch.allclose(kept[0], expected[0].to(kept.dtype))


def test_training_uses_the_source_and_a_missing_index_is_refused():
    pipe = _pipe()
    model = pipe.model.train()
    batch = pipe.processor([edit(pattern(1), "make it blue", target=pattern(2))])
    torch.manual_seed(0)
    model(**batch).loss.backward()
    extra = model.dit.patch_embed.proj.weight.grad[:, model.config.latent_channels:]
    assert float(extra.abs().sum()) > 0  # the new input channels learn
    stripped = {k: v for k, v in batch.items() if k != "gen_slot_source_index"}
    try:
        model(**stripped)
    except ValueError as err:
        assert "gen_slot_source_index" in str(err) and "from_config" in str(err)
    else:
        raise AssertionError("a batch without source indices must be refused")


def test_setting_survives_save_and_load(tmp_path):
    from unigen.model import UniGenPipeline

    pipe = _pipe(seed=5)
    pipe.save_pretrained(tmp_path / "p")
    again = UniGenPipeline.from_pretrained(tmp_path / "p")
    assert again.model.config.image_latent_conditioning and again.processor.image_latent_conditioning
    for (name, a), (_, b) in zip(pipe.model.dit.state_dict().items(), again.model.dit.state_dict().items()):
        assert torch.equal(a, b), name
    conversation = edit(pattern(1), "make it blue")
    first = pipe(conversation, num_inference_steps=2, seed=0)[0]
    second = again(conversation, num_inference_steps=2, seed=0)[0]
    assert np.array_equal(np.asarray(first), np.asarray(second))


def test_stage_two_may_switch_it_on_over_a_stage_one_model(tmp_path):
    """init_from weights of a DiT without source channels load into one with them (zero columns)."""
    from unigen.orchestrator.runtime.build import load_init_weights

    plain, wide = tiny_pipeline(seed=1).model, _pipe(seed=2).model
    torch.save(plain.state_dict(), tmp_path / "stage1.pt")
    load_init_weights(wide, tmp_path / "stage1.pt")
    weight = wide.dit.patch_embed.proj.weight
    channels = wide.config.latent_channels
    assert torch.equal(weight[:, :channels], plain.dit.patch_embed.proj.weight)
    assert float(weight[:, channels:].abs().sum()) == 0.0
    for (name, a), (_, b) in zip(wide.connector.state_dict().items(), plain.connector.state_dict().items()):
        assert torch.equal(a, b), name
