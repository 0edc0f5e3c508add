"""Every speed switch of the training step computes the same objective as a plain MetaQuery forward.

The reference below is written out here on purpose, without the model's forward: embed the tokens, put
the vision features and the learned queries/slot boundaries in place, run the WHOLE backbone with
autograd, gather the hidden states at the query positions, connector, DiT, rectified-flow loss. Same
weights (same seed), same inputs, same randomness (drop modes, flow times, noise are drawn in the model's
order). The optimised step must give the same loss and the same gradients of the queries, slot
boundaries, connector and DiT as the reference in the same precision: within 1e-4 relative in float32,
within 3e-2 with bfloat16 frozen weights or autocast (bf16 rounds each op to 8 mantissa bits, and a
different order of the same ops rounds differently). With bf16, the loss also stays within 5e-2 of the
float32 reference: the objective is the same up to bf16 noise. A wrong path (e.g. slots that lose the
prompt) is off by far more than 100%.
"""
import pytest
import torch

from tests.unit.model.model_helpers import (assert_grads_match, edit, pattern, rel, seed_example, t2i, tiny_pipeline,
                                            trainable_grads)
from unigen.model.cfg_dropout import condition_mask, sample_drop_modes
from unigen.model.positions import rope_positions

# Drop probabilities high enough that one batch mixes kept, text-hidden and image-hidden conversations,
# so the prefix pass must honour the masked tokens.
DROPS = {"cfg_drop_text": 0.3, "cfg_drop_image": 0.3, "cfg_drop_both": 0.1}
SEED = 11


def _features(value):
    if isinstance(value, torch.Tensor):
        return value
    if getattr(value, "pooler_output", None) is not None:
        return _features(value.pooler_output)
    return torch.cat([_features(v) for v in value])


def reference_loss(model, batch):
    """The plain MetaQuery step (see the module docstring); RNG drawn as the model draws it."""
    if batch.get("gen_latents") is not None:
        latents = batch["gen_latents"].float()
    else:  # the frozen DC-AE prepares the targets (outside autocast, as a data step would)
        with torch.no_grad():
            latents = model.vae.encode(batch["gen_pixel_values"].to(model.vae.dtype)).latent.float()
        latents = latents * model.vae.config.scaling_factor
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=model.config.autocast):
        return _reference_loss(model, batch, latents)


def _reference_loss(model, batch, latents):
    cfg = model.config
    ids, mask = batch["input_ids"], batch["attention_mask"]
    modes = sample_drop_modes(ids.shape[0], cfg.cfg_drop_text, cfg.cfg_drop_image, cfg.cfg_drop_both, "cpu")
    mask = condition_mask(mask, batch.get("content_type_ids"), modes)
    backbone = model.backbone.model
    embeds = model.backbone.get_input_embeddings()(ids)
    width = embeds.dtype  # the backbone's parameter dtype: queries enter the backbone in it
    if batch.get("pixel_values") is not None:
        features = _features(backbone.get_image_features(batch["pixel_values"].to(width), batch["image_grid_thw"]))
        embeds = embeds.masked_scatter((ids == model.backbone.config.image_token_id)[..., None], features.to(width))
    pad = ids == cfg.image_gen_pad_token_id
    n_slots = int((ids == cfg.image_gen_start_token_id).sum())
    embeds = embeds.masked_scatter(pad[..., None], model.queries.to(width).repeat(n_slots, 1))
    embeds = embeds.masked_scatter((ids == cfg.image_gen_start_token_id)[..., None],
                                   model.slot_boundaries[0].to(width).expand(n_slots, -1))
    embeds = embeds.masked_scatter((ids == cfg.image_gen_end_token_id)[..., None],
                                   model.slot_boundaries[1].to(width).expand(n_slots, -1))
    positions = rope_positions(mask, batch.get("mm_token_type_ids"), batch.get("image_grid_thw"),
                               model.backbone.config.vision_config.spatial_merge_size)
    hidden = backbone.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                     use_cache=False).last_hidden_state
    hidden = hidden[pad].view(n_slots, cfg.num_queries, -1)[batch["gen_slot_has_target"].bool()]
    conditions = model.connector(hidden.to(model.queries.dtype))
    times = torch.sigmoid(torch.randn(latents.shape[0]))
    noise = torch.randn(latents.shape)
    s = times.view(-1, 1, 1, 1)
    prediction = model.dit(hidden_states=(1 - s) * latents + s * noise, encoder_hidden_states=conditions,
                           timestep=times * 1000.0, return_dict=False)[0]
    return (prediction.float() - (noise - latents)).pow(2).flatten(1).mean(1).mean()


def run(model, batch, fn):
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(SEED)
    loss = fn(model, batch)
    loss.backward()
    return loss.detach().float(), trainable_grads(model)


@pytest.fixture(scope="module")
def batches():
    proc = tiny_pipeline().processor
    mixed = proc([seed_example(), t2i("a long caption about a red square on a blue ground", pattern(6)),
                  edit(pattern(4), "make it green", pattern(5))])
    latents = tiny_pipeline().model.encode_latents(mixed["gen_pixel_values"])
    precomputed = dict(mixed, gen_latents=latents, gen_pixel_values=None)
    return {"pixels": mixed, "latents": precomputed}


PRECISION = ("frozen_dtype", "autocast")


@pytest.fixture(scope="module")
def reference(batches):
    """(loss, gradients) of the plain reference per precision setting and batch, computed once each."""
    cache = {}

    def get(switches, name):
        precision = tuple((k, switches[k]) for k in PRECISION if k in switches)
        if (precision, name) not in cache:
            model = tiny_pipeline(seed=0, frozen_prefix_cache=False, **DROPS, **dict(precision)).model
            cache[precision, name] = run(model, batches[name], reference_loss)
        return cache[precision, name]

    return get


CASES = [  # (switches, tolerance, targets): pixel targets add the DC-AE encode, the rest is the same
    ({"frozen_prefix_cache": False}, 1e-4, "pixels"),
    ({"frozen_prefix_cache": True}, 1e-4, "pixels"),
    ({"frozen_prefix_cache": True}, 1e-4, "latents"),
    ({"frozen_prefix_cache": True, "gradient_checkpointing": True}, 1e-4, "latents"),
    ({"frozen_prefix_cache": True, "gradient_checkpointing": True, "gradient_checkpointing_parts": ["backbone"]},
     1e-4, "latents"),
    ({"frozen_prefix_cache": False, "gradient_checkpointing": True}, 1e-4, "latents"),
    ({"frozen_prefix_cache": True, "attn_implementation": "eager"}, 1e-4, "latents"),
    ({"frozen_prefix_cache": True, "compile_blocks": True}, 1e-4, "latents"),
    ({"frozen_prefix_cache": True, "compile_blocks": True, "gradient_checkpointing": True}, 1e-4, "latents"),
    ({"frozen_prefix_cache": True, "frozen_dtype": "bfloat16"}, 3e-2, "latents"),
    ({"frozen_prefix_cache": True, "frozen_dtype": "bfloat16", "autocast": True, "gradient_checkpointing": True},
     3e-2, "latents"),
]


@pytest.mark.parametrize("switches,tol,latents", CASES, ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items())
                         if isinstance(v, dict) else str(v))
def test_switch_matches_the_plain_reference(switches, tol, latents, batches, reference):
    model = tiny_pipeline(seed=0, **DROPS, **switches).model
    if switches.get("frozen_prefix_cache"):
        assert model.config.frozen_prefix_cache
    blocks = (*model.connector.layers, *model.dit.transformer_blocks)
    assert all((b._compiled_call_impl is not None) == bool(switches.get("compile_blocks")) for b in blocks)
    loss, grads = run(model, batches[latents], lambda m, b: m(**b).loss)
    ref_loss, ref_grads = reference(switches, latents)
    assert rel(loss, ref_loss) <= tol, (float(loss), float(ref_loss))
    assert rel(loss, reference({}, latents)[0]) <= (1e-4 if tol <= 1e-4 else 5e-2)
    # bf16: some tensors' gradients are ill-conditioned (Sana's linear attention normalises away the scale
    # of q, so to_q's gradient is a small difference of large terms): compare parts only.
    assert_grads_match(grads, ref_grads, tol, per_tensor=tol <= 1e-4)


def test_the_split_runs_the_prompt_without_autograd_and_only_the_slot_span_with_it(batches):
    """The switch is really taken: the decoder layers run twice (prefix without grad, span with grad),
    and the span starts at the earliest slot, ends at the last query."""
    model = tiny_pipeline(seed=0, frozen_prefix_cache=True).model.train()
    calls = []
    model.backbone.model.language_model.layers[0].register_forward_hook(
        lambda m, args, out: calls.append((args[0].shape[1], torch.is_grad_enabled(), args[0].requires_grad)))
    batch = batches["latents"]
    model(**batch).loss.backward()
    ids = batch["input_ids"]
    starts = (ids == model.config.image_gen_start_token_id).float().argmax(1)
    pads = ids == model.config.image_gen_pad_token_id
    last = ids.shape[1] - 1 - pads.flip(1).float().argmax(1)
    prefix, end = int(starts.min()), int(last.max()) + 1
    assert calls == [(prefix, False, False), (end - prefix, True, True)]
    assert end - prefix < ids.shape[1]
    calls.clear()
    with torch.no_grad():  # inference (the pipeline) keeps the single plain forward
        model(**batch)
    assert calls == [(ids.shape[1], False, False)]
