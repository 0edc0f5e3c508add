"""UniGenPipeline: one image per empty slot, seeded sampling, guidance, and chat == plain Qwen2.5-VL."""
import jinja2
import pytest
import torch

from tests.unit.model.model_helpers import QWEN_TEMPLATE, edit, noise_image, pattern, tiny_pipeline


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(seed=2)


def test_one_image_per_empty_slot_in_order(pipe):
    conversation = [{"role": "user", "content": [
        {"type": "text", "text": "Three pictures:"}, {"type": "image_gen"},
        {"type": "image_gen", "image": pattern(1)}, {"type": "text", "text": "and"}, {"type": "image_gen"}]}]
    images = pipe(conversation, num_inference_steps=2, seed=0)
    assert len(images) == 2 and all(im.size == (64, 64) and im.mode == "RGB" for im in images)
    batch_images = pipe([conversation, edit(pattern(2), "make it red")], num_inference_steps=2, seed=0)
    assert len(batch_images) == 3
    assert pipe([[{"role": "user", "content": [{"type": "image_gen", "image": pattern(0)}]}]]) == []


def test_same_seed_same_pixels_other_seed_other_pixels(pipe):
    request = edit(noise_image(1), "make it blue")
    first = pipe(request, num_inference_steps=3, seed=123)[0]
    again = pipe(request, num_inference_steps=3, seed=123)[0]
    other = pipe(request, num_inference_steps=3, seed=124)[0]
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()


def test_size_and_guidance_settings(pipe):
    request = edit(pattern(3), "make it green")
    wide = pipe(request, num_inference_steps=2, seed=0, height=32, width=96)[0]
    assert wide.size == (96, 32)
    with pytest.raises(ValueError, match=r"height=60, width=64: both must be positive multiples of the VAE "
                                         r"compression 8"):
        pipe(request, height=60, width=64)
    no_guidance = pipe(request, num_inference_steps=2, seed=0, guidance_scale=1.0, image_guidance_scale=1.0)
    with_guidance = pipe(request, num_inference_steps=2, seed=0, guidance_scale=7.0, image_guidance_scale=2.0)
    assert no_guidance[0].tobytes() != with_guidance[0].tobytes()


def test_guidance_branches_follow_the_inputs(pipe):
    from unigen.model.cfg_dropout import DROP_BOTH, DROP_TEXT, KEEP

    with_image = pipe.processor([edit(pattern(0), "x")])
    text_only = pipe.processor([[{"role": "user", "content": [{"type": "text", "text": "x"},
                                                               {"type": "image_gen"}]}]])
    assert pipe._guidance_modes(with_image, 4.5, 1.5) == [KEEP, DROP_TEXT, DROP_BOTH]
    assert pipe._guidance_modes(text_only, 4.5, 1.5) == [KEEP, DROP_BOTH]
    assert pipe._guidance_modes(with_image, 1.0, 1.0) == [KEEP]


def plain_qwen_reference(pipe, messages, max_new_tokens, folder):
    """Greedy generation of a plain Qwen2_5_VLForConditionalGeneration with the same weights, with its
    inputs built the usual way: Qwen's jinja template, the tokenizer, the image processor."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    pipe.model.backbone.save_pretrained(folder)
    qwen = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder).eval()
    tokenizer, image_processor = pipe.processor.tokenizer, pipe.processor.image_processor
    images = [item["image"] for m in messages for item in m["content"] if item["type"] == "image"]
    vision = image_processor(images=images, return_tensors="pt")
    text = jinja2.Template(QWEN_TEMPLATE).render(messages=messages, add_generation_prompt=True)
    counts = iter((vision["image_grid_thw"].prod(-1) // image_processor.merge_size ** 2).tolist())
    parts = text.split("<|image_pad|>")
    text = parts[0] + "".join("<|image_pad|>" * next(counts) + p for p in parts[1:])
    inputs = tokenizer([text], return_tensors="pt", add_special_tokens=False)
    image_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    out = qwen.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                        pixel_values=vision["pixel_values"], image_grid_thw=vision["image_grid_thw"],
                        mm_token_type_ids=(inputs["input_ids"] == image_id).long(),
                        max_new_tokens=max_new_tokens, do_sample=False,
                        eos_token_id=[im_end, tokenizer.pad_token_id], pad_token_id=tokenizer.pad_token_id)
    return inputs["input_ids"], out[0, inputs["input_ids"].shape[1]:]


def test_chat_equals_plain_qwen_greedy_generation(pipe, tmp_path):
    messages = [{"role": "user", "content": [{"type": "image", "image": noise_image(5, (84, 56))},
                                             {"type": "text", "text": "What is shown here?"}]}]
    prompt_ids, new_ids = plain_qwen_reference(pipe, messages, 8, tmp_path)
    assert len(new_ids) >= 2 and new_ids[0] not in (pipe.processor.token_ids["<|im_end|>"],)
    mine = pipe.processor([messages], add_generation_prompt=True)["input_ids"][0]
    assert torch.equal(mine, prompt_ids[0])  # the processor builds exactly Qwen's prompt
    assert torch.equal(pipe.answer_ids(messages, max_new_tokens=8), new_ids)  # the same tokens
    assert pipe.chat(messages, max_new_tokens=8) == pipe.processor.tokenizer.decode(new_ids, skip_special_tokens=True)


def test_training_with_the_backbone_frozen_leaves_chat_as_the_original_qwen(tmp_path):
    """The reference is the Qwen checkpoint saved BEFORE training; queries, connector and DiT move, the
    backbone's answers do not (queries are our parameter, not vocabulary rows the step could touch)."""
    pipe = tiny_pipeline(seed=8)
    messages = [{"role": "user", "content": [{"type": "image", "image": noise_image(6, (56, 84))},
                                             {"type": "text", "text": "Describe this image."}]}]
    _, before_ids = plain_qwen_reference(pipe, messages, 8, tmp_path / "qwen-before")
    queries = pipe.model.queries.detach().clone()
    model = pipe.model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(3):
        model(**pipe.processor([edit(pattern(step), "make it red", pattern(step + 1))])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert not torch.equal(model.queries.detach(), queries)
    assert torch.equal(pipe.answer_ids(messages, max_new_tokens=8), before_ids)


def test_sampler_is_flow_matching_euler_with_sanas_inference_shift(pipe):
    """The DiT sees timesteps 1000 s_i with s_i = k u_i / (1 + (k - 1) u_i), k = flow_shift = 3.0 (Sana's
    shift at 512/1024 px), u_i evenly spaced from 1; each step moves the latent by (s_{i+1} - s_i) v."""
    assert pipe.model.config.flow_shift == 3.0
    seen = []
    hook = pipe.model.dit.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["timestep"][0].item()), with_kwargs=True)
    try:
        pipe(edit(pattern(0), "x"), num_inference_steps=6, seed=0, guidance_scale=1.0, image_guidance_scale=1.0)
    finally:
        hook.remove()
    s = torch.tensor(seen, dtype=torch.float64) / 1000.0
    u = s / (3.0 - 2.0 * s)  # the inverse of the shift
    assert len(seen) == 6 and abs(u[0].item() - 1.0) < 1e-6
    steps = u[1:] - u[:-1]
    assert torch.allclose(steps, steps[0].expand_as(steps), atol=1e-5) and steps[0] < 0
    unshifted = s[1:] - s[:-1]
    assert not torch.allclose(unshifted, unshifted[0].expand_as(unshifted), atol=1e-3)  # the shift is applied
    from unigen.model.flow import make_scheduler

    scheduler = make_scheduler(pipe.model.config.flow_shift)
    scheduler.set_timesteps(6)
    sigmas = scheduler.sigmas
    v, x = torch.ones(1, 4, 2, 2), torch.zeros(1, 4, 2, 2)
    moved = scheduler.step(v, scheduler.timesteps[0], x).prev_sample
    assert torch.allclose(moved, (sigmas[1] - sigmas[0]) * v)  # Euler: x + (s_next - s) v


def test_chat_refuses_image_gen_items(pipe):
    with pytest.raises(ValueError, match=r"conversation 0, message 0, item 1: chat\(\) answers in text"):
        pipe.chat([{"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "image_gen"}]}])


# ---- several slots: filled in order, each later slot seeing the earlier images ---------------------------
def two_slots():
    return [{"role": "user", "content": [{"type": "text", "text": "A circle"}, {"type": "image_gen"},
                                         {"type": "text", "text": "then the same circle in red"},
                                         {"type": "image_gen"}]}]


def test_slots_are_filled_in_order_and_a_later_slot_sees_the_earlier_image(pipe):
    import copy

    request = two_slots()
    before = copy.deepcopy(request)
    images, filled = pipe.generate_conversation(request, num_inference_steps=2, seed=5)
    first, second = images
    assert request == before  # the caller's conversation is untouched
    # The first image is fed back right after its slot; the last slot is the last item: nothing to feed.
    assert [it["type"] for it in filled[0]["content"]] == ["text", "image_gen", "image", "text", "image_gen"]
    assert filled[0]["content"][1]["image"] is first and filled[0]["content"][2]["image"] is first
    assert filled[0]["content"][4]["image"] is second
    # Round 1 is exactly a one-slot generation from that filled conversation with seed + 1 ...
    def with_first(image):
        content = [request[0]["content"][0], {"type": "image_gen", "image": image}, {"type": "image", "image": image},
                   request[0]["content"][2], {"type": "image_gen"}]
        return [{"role": "user", "content": content}]
    assert pipe(with_first(first), num_inference_steps=2, seed=6)[0].tobytes() == second.tobytes()
    # ... and a different first image gives a different second one: the second slot depends on the first.
    assert pipe(with_first(pattern(7)), num_inference_steps=2, seed=6)[0].tobytes() != second.tobytes()
    again = pipe(request, num_inference_steps=2, seed=5)
    assert [im.tobytes() for im in again] == [im.tobytes() for im in images]  # same seed, same pixels


def test_a_batch_of_conversations_with_different_slot_counts_is_generated_round_by_round(pipe):
    one = edit(pattern(2), "make it red")
    images, filled = pipe.generate_conversation([two_slots(), one], num_inference_steps=2, seed=0)
    assert len(images) == 3 and len(filled) == 2  # two_slots' two images, then the edit's
    a1, a2, b1 = images
    assert filled[1][0]["content"][2]["image"] is b1 and filled[0][0]["content"][2]["image"] is a1
    # Round 1 holds only two_slots (the edit has no second slot): a one-conversation batch with seed + 1.
    alone = [{"role": "user", "content": [two_slots()[0]["content"][0], {"type": "image_gen", "image": a1},
                                          {"type": "image", "image": a1}, two_slots()[0]["content"][2],
                                          {"type": "image_gen"}]}]
    assert pipe(alone, num_inference_steps=2, seed=1)[0].tobytes() == a2.tobytes()
    assert pipe([edit(pattern(2), "make it red", target=b1)]) == []  # nothing left to generate
    with pytest.raises(ValueError, match="no conversations"):
        pipe([])


def test_slots_as_images_is_the_filled_conversation_chat_accepts(pipe):
    from unigen.model.pipeline import slots_as_images

    _, filled = pipe.generate_conversation(two_slots(), num_inference_steps=1, seed=0)
    view = slots_as_images(filled)
    assert [it["type"] for it in view[0]["content"]] == ["text", "image", "text", "image"]
    assert view[0]["content"][1]["image"] is filled[0]["content"][1]["image"]  # fed-back copy kept, slot dropped
    assert view[0]["content"][3]["image"] is filled[0]["content"][4]["image"]  # last slot shown as its image
    assert isinstance(pipe.chat(view + [{"role": "user", "content": "What changed?"}], max_new_tokens=2), str)
    with pytest.raises(ValueError, match=r"message 0, item 1: an empty image_gen slot has no image to show chat"):
        slots_as_images(two_slots())


def test_several_slots_at_a_non_square_size(pipe):
    """An earlier image at another size than the model's is fed back as an input and as a filled slot's target."""
    images = pipe(two_slots(), num_inference_steps=1, seed=0, height=32, width=96)
    assert [im.size for im in images] == [(96, 32), (96, 32)]


def test_chat_answers_a_text_only_conversation(pipe):
    """No images: generate must not be handed pixel_values=None (it would run the vision encoder on it)."""
    answer = pipe.chat([{"role": "user", "content": "Draw me nothing, just say hello."}], max_new_tokens=2)
    assert isinstance(answer, str)
