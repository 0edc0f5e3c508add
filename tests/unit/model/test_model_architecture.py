"""The pieces issue 2 names, checked one by one: queries of our own, the connector's shape and direction, the
rectified-flow loss by hand, 256 pads per slot at full size."""
import pytest
import torch
from torch import nn

from tests.unit.model.model_helpers import pattern, seed_example, t2i, tiny_pipeline
from unigen.model.config import get_preset


@pytest.fixture(scope="module")
def pipe():
    pipe = tiny_pipeline(seed=4)
    pipe.model.eval()
    return pipe


def test_queries_are_our_parameter_not_vocabulary_rows(pipe):
    model = pipe.model
    assert isinstance(model.queries, nn.Parameter)
    assert tuple(model.queries.shape) == (model.config.num_queries, model.config.backbone_width)
    batch = pipe.processor([seed_example(targets=False)])
    before = model.slot_conditions(batch)
    embed = model.backbone.get_input_embeddings().weight
    ids = [model.config.image_gen_start_token_id, model.config.image_gen_pad_token_id,
           model.config.image_gen_end_token_id]
    saved = embed[ids].clone()
    with torch.no_grad():
        embed[ids] = torch.randn_like(saved) * 10  # the vocabulary rows of the slot tokens: never read
    try:
        assert torch.equal(model.slot_conditions(batch), before)
        with torch.no_grad():
            model.queries.add_(0.1)  # the queries are what the slots hold
        assert not torch.allclose(model.slot_conditions(batch), before)
    finally:
        with torch.no_grad():
            embed[ids] = saved
            model.queries.sub_(0.1)


def test_full_size_queries_and_connector_on_meta_tensors():
    config = get_preset("unigen-3b", backbone_source=None, decoder_source=None)
    from unigen.model.modeling import UniGenModel

    with torch.device("meta"):
        model = UniGenModel(config)
    assert tuple(model.queries.shape) == (256, 2048)
    connector = model.connector
    assert len(connector.layers) == 24
    # ... then Linear -> GELU -> Linear -> RMSNorm to Sana's caption width (2304, Gemma-2's)
    assert (connector.proj_in.in_features, connector.proj_in.out_features) == (2048, 2304)
    assert isinstance(connector.act, nn.GELU)
    assert (connector.proj_out.in_features, connector.proj_out.out_features) == (2304, 2304)
    assert isinstance(connector.out_norm, nn.RMSNorm) and connector.out_norm.normalized_shape == (2304,)
    assert model.dit.config.caption_channels == 2304
    # DC-AE f32c32, frozen: a 512 px target is a 32 x 16 x 16 latent, the Sana DiT's input
    assert (config.latent_channels, config.image_size // config.vae_compression) == (32, 16)
    assert model.vae.config.latent_channels == model.dit.config.in_channels == 32
    assert not any(p.requires_grad for p in model.vae.parameters())
    assert get_preset("unigen-3b", connector_layers=6).connector_layers == 6  # configurable


def test_connector_is_bidirectional_and_maps_to_the_caption_width(pipe):
    connector = pipe.model.connector
    width, caption = pipe.model.config.backbone_width, pipe.model.config.caption_width
    torch.manual_seed(0)
    hidden = torch.randn(2, pipe.model.config.num_queries, width)
    out = connector(hidden)
    assert out.shape == (2, pipe.model.config.num_queries, caption)
    changed = hidden.clone()
    changed[:, -1] += 1.0  # only the LAST query of each slot
    out2 = connector(changed)
    assert not torch.allclose(out[:, 0], out2[:, 0])  # the first query sees it: not causal
    assert torch.allclose(out[0], connector(hidden[:1])[0], atol=1e-6)  # slots do not see each other


def test_loss_is_rectified_flow_on_the_dc_ae_latents_computed_by_hand(pipe):
    """x_s = (1 - s) x0 + s e, the DiT at timestep 1000 s predicts e - x0, loss = per-slot MSE (mean over slots);
    eval mode draws no CFG modes, so the RNG gives flow times then noise."""
    model = pipe.model
    batch = pipe.processor([t2i("a red cube", pattern(1)), seed_example()])
    torch.manual_seed(21)
    out = model(**batch)
    x0 = model.encode_latents(batch["gen_pixel_values"])
    conditions = model.slot_conditions(batch)[batch["gen_slot_has_target"]]
    torch.manual_seed(21)
    s = torch.sigmoid(torch.randn(x0.shape[0]))  # logit-normal times
    noise = torch.randn(x0.shape)
    x_s = (1 - s.view(-1, 1, 1, 1)) * x0 + s.view(-1, 1, 1, 1) * noise
    with torch.no_grad():
        v = model.dit(hidden_states=x_s, encoder_hidden_states=conditions, timestep=1000 * s, return_dict=False)[0]
    per_slot = ((v - (noise - x0)) ** 2).flatten(1).mean(1)
    assert out.slot_losses.shape == (3,)
    assert torch.allclose(out.flow_times, s)
    assert torch.allclose(out.slot_losses, per_slot, rtol=1e-5, atol=1e-6)
    assert torch.allclose(out.loss, per_slot.mean(), rtol=1e-5)


def test_each_slot_is_exactly_num_queries_pads_256_by_default():
    from unigen.model.processor import UniGenProcessor

    assert get_preset("unigen-7b").num_queries == 256
    processor = UniGenProcessor.from_config(get_preset("tiny", num_queries=256))
    batch = processor([seed_example(), t2i("one slot"), [{"role": "user", "content": "none"}]])
    pad, start, end = (processor.image_gen_pad_token_id, processor.image_gen_start_token_id,
                       processor.image_gen_end_token_id)
    assert (batch["input_ids"] == pad).sum(dim=1).tolist() == [2 * 256, 256, 0]
    for row in batch["input_ids"]:  # every slot: start, 256 pads, end, contiguous
        ids = row.tolist()
        for k in [i for i, t in enumerate(ids) if t == start]:
            assert ids[k + 1:k + 257] == [pad] * 256 and ids[k + 257] == end
