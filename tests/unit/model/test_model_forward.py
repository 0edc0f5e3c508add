"""UniGenModel.forward: loss over slots, gradients, causal slot context, positions, CFG dropout, RNG."""
import pytest
import torch

from tests.unit.model.model_helpers import edit, pattern, seed_example, t2i, tiny_pipeline
from unigen.model.cfg_dropout import DROP_BOTH, DROP_IMAGE, DROP_TEXT, KEEP
from unigen.model.positions import rope_positions


@pytest.fixture(scope="module")
def pipe():
    pipe = tiny_pipeline()
    pipe.model.eval()
    return pipe


def training_batch(processor):
    return processor([seed_example(), edit(pattern(4), "make it blue", pattern(5)), t2i("a dog", pattern(6))])


def test_loss_covers_every_target_slot_and_two_slots_train_two_images(pipe):
    model = pipe.model.train()
    torch.manual_seed(0)
    out = model(**training_batch(pipe.processor))
    model.eval()
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.slot_losses.shape == (4,)  # 2 slots in the seed example + 1 + 1
    assert torch.allclose(out.loss, out.slot_losses.mean())
    assert out.flow_times.shape == (4,) and ((out.flow_times > 0) & (out.flow_times < 1)).all()
    assert out.drop_modes.shape == (3,)


def test_gradients_reach_queries_connector_and_dit_not_the_frozen_parts():
    model = tiny_pipeline().model.train()
    batch = training_batch(tiny_pipeline().processor)
    model(**batch).loss.backward()
    assert model.queries.grad is not None and model.queries.grad.abs().sum() > 0
    assert model.slot_boundaries.grad is not None and model.slot_boundaries.grad.abs().sum() > 0
    for part in (model.connector, model.dit):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    for part in (model.backbone, model.vae):
        assert all(not p.requires_grad and p.grad is None for p in part.parameters())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.split(".")[0] in {"queries", "slot_boundaries", "connector", "dit"} for n in trainable)


def test_a_later_slot_sees_an_earlier_slots_context_causally(pipe):
    def conditions(between, after):
        conv = [{"role": "user", "content": [{"type": "text", "text": "first"}, {"type": "image_gen"},
                                             {"type": "text", "text": between}, {"type": "image_gen"},
                                             {"type": "text", "text": after}]}]
        return pipe.model.slot_conditions(pipe.processor([conv]))

    base = conditions("then a dog", "end")
    changed_between = conditions("then a cat", "end")
    changed_after = conditions("then a dog", "finish")
    assert torch.allclose(base[0], changed_between[0], atol=1e-6)  # slot 1 cannot see text after it
    assert not torch.allclose(base[1], changed_between[1])  # slot 2 sees it
    assert torch.allclose(base, changed_after, atol=1e-6)
    first_changed = pipe.model.slot_conditions(pipe.processor([[{"role": "user", "content": [
        {"type": "text", "text": "other"}, {"type": "image_gen"}, {"type": "text", "text": "then a dog"},
        {"type": "image_gen"}, {"type": "text", "text": "end"}]}]]))
    assert not torch.allclose(base[0], first_changed[0]) and not torch.allclose(base[1], first_changed[1])


def test_left_padding_does_not_change_a_conversations_slots(pipe):
    alone = pipe.model.slot_conditions(pipe.processor([t2i("a red cube")]))
    batched = pipe.model.slot_conditions(pipe.processor([seed_example(targets=False), t2i("a red cube")]))
    assert torch.allclose(alone[0], batched[2], atol=1e-5)


def test_positions_match_qwens_rope_index(pipe):
    batch = pipe.processor([seed_example(), t2i("text only"), edit(pattern(1), "x")])
    mine = rope_positions(batch["attention_mask"], batch["mm_token_type_ids"], batch["image_grid_thw"], 2)
    theirs, _ = pipe.model.backbone.model.get_rope_index(
        batch["input_ids"], mm_token_type_ids=batch["mm_token_type_ids"],
        image_grid_thw=batch["image_grid_thw"], attention_mask=batch["attention_mask"])
    shown = batch["attention_mask"].bool()
    assert torch.equal(mine[:, shown], theirs[:, shown])


@pytest.mark.parametrize("mode,keep", [(DROP_TEXT, {"image", "image_gen"}), (DROP_IMAGE, {"text", "image_gen"}),
                                       (DROP_BOTH, {"image_gen"})])
def test_cfg_drop_equals_the_conversation_written_without_those_items(pipe, mode, keep):
    full = seed_example(targets=False)
    without = [{"role": "user", "content": [i for i in full[0]["content"] if i["type"] in keep]}]
    dropped = pipe.model.slot_conditions(pipe.processor([full]), mode)
    written = pipe.model.slot_conditions(pipe.processor([without]))
    assert torch.allclose(dropped, written, atol=1e-5)
    assert not torch.allclose(pipe.model.slot_conditions(pipe.processor([full]), KEEP), written, atol=1e-3)


def test_training_dropout_draws_from_the_global_rng_with_the_configured_rates():
    always_both = tiny_pipeline(cfg_drop_text=0.0, cfg_drop_image=0.0, cfg_drop_both=1.0)
    model, batch = always_both.model.train(), training_batch(always_both.processor)
    assert model(**batch).drop_modes.tolist() == [DROP_BOTH] * 3
    never = tiny_pipeline(cfg_drop_text=0.0, cfg_drop_image=0.0, cfg_drop_both=0.0).model.train()
    assert never(**batch).drop_modes.tolist() == [KEEP] * 3
    # same global seed -> same step (modes, times, noise), bit for bit
    model = tiny_pipeline().model.train()
    torch.manual_seed(7)
    first = model(**batch)
    torch.manual_seed(7)
    second = model(**batch)
    assert torch.equal(first.slot_losses, second.slot_losses) and torch.equal(first.drop_modes, second.drop_modes)
    third = model(**batch)
    assert not torch.equal(first.slot_losses, third.slot_losses)


def test_precomputed_latents_give_the_same_loss_as_pixels(pipe):
    batch = pipe.processor([t2i("a", pattern(1)), t2i("b", pattern(2))])
    latents = pipe.model.encode_latents(batch["gen_pixel_values"])
    assert latents.shape == (2, 4, 8, 8) and latents.dtype == torch.float32
    convs = [[{"role": "user", "content": [{"type": "text", "text": t},
                                           {"type": "image_gen", "image": pattern(i), "latents": lat}]}]
             for t, i, lat in (("a", 1, latents[0]), ("b", 2, latents[1]))]
    with_latents = pipe.processor(convs)
    torch.manual_seed(3)
    from_pixels = pipe.model(**batch).slot_losses
    torch.manual_seed(3)
    from_latents = pipe.model(**with_latents).slot_losses
    assert torch.allclose(from_pixels, from_latents, atol=1e-6)
    wrong = dict(with_latents, gen_latents=torch.zeros(2, 4, 16, 16))
    with pytest.raises(ValueError, match=r"gen_latents have shape \(4, 16, 16\) per slot, this model takes"):
        pipe.model(**wrong)


def test_a_batch_without_targets_gives_zero_loss_that_still_backpropagates():
    model = tiny_pipeline().model.train()
    batch = tiny_pipeline().processor([t2i("no target"), [{"role": "user", "content": "hello"}]])
    out = model(**batch)
    assert out.loss.item() == 0.0 and out.slot_losses.numel() == 0
    out.loss.backward()
    assert all(p.grad is not None for p in model.dit.parameters())
    assert model.queries.grad is not None


def test_run_every_module_keeps_vision_tower_and_vae_in_the_step_without_changing_the_loss(pipe):
    """Under ZeRO-3 every rank must run every module in the same order (see modeling.run_every_module)."""
    model = tiny_pipeline().model.train()
    latents = pipe.model.encode_latents(pipe.processor([t2i("x", pattern(0))])["gen_pixel_values"])
    conv = [{"role": "user", "content": [{"type": "text", "text": "text only"},
                                         {"type": "image_gen", "image": pattern(0), "latents": latents[0]}]}]
    batch = pipe.processor([conv])  # no input image, precomputed latents: neither tower nor VAE needed
    order = []
    for name in ("vae.encoder", "backbone.model.visual", "backbone.model.language_model", "connector", "dit"):
        model.get_submodule(name).register_forward_pre_hook(lambda m, a, name=name: order.append(name))
    torch.manual_seed(1)
    plain = model(**batch).loss
    assert order == ["backbone.model.language_model", "connector", "dit"]
    order.clear()
    model.run_every_module = True
    torch.manual_seed(1)
    kept = model(**batch).loss
    assert order == ["vae.encoder", "backbone.model.visual", "backbone.model.language_model", "connector", "dit"]
    assert torch.equal(plain, kept)
    order.clear()
    model(**pipe.processor([edit(pattern(1), "x", pattern(2))]))  # a batch that needs them: same order
    assert order == ["vae.encoder", "backbone.model.visual", "backbone.model.language_model", "connector", "dit"]


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    batch = tiny_pipeline().processor([seed_example()])
    results = []
    for flag in (False, True):
        model = tiny_pipeline(gradient_checkpointing=flag).model.train()
        torch.manual_seed(5)
        loss = model(**batch).loss
        loss.backward()
        results.append((loss.detach(), model.queries.grad.clone(), next(model.dit.parameters()).grad.clone()))
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-6)


def test_bf16_autocast_runs():
    model = tiny_pipeline(autocast=True).model.train()
    out = model(**tiny_pipeline().processor([seed_example()]))
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.queries.grad is not None


def test_slot_count_mismatch_is_reported(pipe):
    batch = pipe.processor([t2i("a", pattern(0))])
    batch["gen_slot_has_target"] = torch.tensor([True, True])
    with pytest.raises(ValueError, match=r"gen_slot_has_target has 2 entries but input_ids hold 1"):
        pipe.model(**batch)


def test_training_times_take_the_timestep_shift(pipe, monkeypatch):
    """timestep_shift k maps each drawn time u to k u / (1 + (k - 1) u), the sampling schedule's map, and the
    DiT trains at the shifted times; k = 1 leaves them as drawn."""
    import unigen.model.modeling as modeling
    from unigen.model.flow import shift_times
    drawn = torch.tensor([0.1, 0.5, 0.8, 0.95])
    monkeypatch.setattr(modeling, "sample_flow_times", lambda count, sampling, device: drawn[:count].clone())
    model = pipe.model.train()
    seen = []
    hook = model.dit.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["timestep"].clone()), with_kwargs=True)
    try:
        for shift in (1.0, 3.0):
            monkeypatch.setattr(model.config, "timestep_shift", shift)
            out = model(**training_batch(pipe.processor))
            expected = drawn if shift == 1.0 else 3 * drawn / (1 + 2 * drawn)
            assert torch.allclose(out.flow_times, expected) and torch.allclose(seen[-1], expected * 1000)
    finally:
        hook.remove()
        model.eval()
    assert torch.allclose(shift_times(drawn, 3.0), 3 * drawn / (1 + 2 * drawn)) and shift_times(drawn, 1.0) is drawn
    assert shift_times(torch.tensor([0.5]), 3.0).item() == pytest.approx(0.75)  # more time at high noise
