"""UniGenProcessor: expansion, left padding, targets, image sources, errors, save/load."""
import fsspec
import numpy as np
import pytest
import torch

from tests.unit.model.model_helpers import edit, noise_image, pattern, seed_example, t2i, tiny_pipeline
from unigen.model.chat_template import IMAGE, STRUCTURE, TEXT
from unigen.model.processor import UniGenProcessor


@pytest.fixture(scope="module")
def processor():
    return tiny_pipeline().processor


def test_slot_pads_equal_slots_times_num_queries(processor):
    batch = processor([seed_example(), t2i("a cat"), [{"role": "user", "content": "no slots"}]])
    pads = (batch["input_ids"] == processor.image_gen_pad_token_id).sum(dim=1).tolist()
    assert pads == [2 * processor.num_queries, processor.num_queries, 0]
    assert processor.num_queries == 16
    assert (batch["input_ids"] == processor.image_gen_start_token_id).sum() == 3
    assert batch["gen_slot_batch_index"].tolist() == [0, 0, 1]
    assert batch["gen_slot_has_target"].tolist() == [True, True, False]
    assert tuple(batch["gen_pixel_values"].shape) == (2, 3, 64, 64)
    assert batch["gen_pixel_values"].min() >= -1 and batch["gen_pixel_values"].max() <= 1
    assert batch["gen_latents"] is None


def test_image_pads_follow_the_grid_and_mm_types_mark_them(processor):
    batch = processor([seed_example()])
    grid = batch["image_grid_thw"]
    assert grid.shape == (2, 3)
    per_image = (grid.prod(-1) // processor.merge_size ** 2).sum().item()
    image_pad = processor.token_ids["<|image_pad|>"]
    assert (batch["input_ids"] == image_pad).sum().item() == per_image
    assert torch.equal(batch["mm_token_type_ids"].bool(), batch["input_ids"] == image_pad)
    assert batch["pixel_values"].shape[0] == grid.prod(-1).sum().item()


def test_left_padding(processor):
    batch = processor([t2i("short"), seed_example()])
    mask = batch["attention_mask"]
    assert mask[1].all() and not mask[0].all()
    first = int(mask[0].argmax())
    assert mask[0, first:].all() and not mask[0, :first].any()
    assert (batch["input_ids"][0, :first] == processor.tokenizer.pad_token_id).all()


def test_tokens_equal_tokenizing_the_expanded_template(processor):
    messages = seed_example()
    batch = processor([messages])
    text = processor.apply_chat_template(messages)
    counts = iter((batch["image_grid_thw"].prod(-1) // 4).tolist())
    parts = text.split("<|image_pad|>")
    text = parts[0] + "".join("<|image_pad|>" * next(counts) + p for p in parts[1:])
    text = text.replace("<|image_gen_pad|>", "<|image_gen_pad|>" * processor.num_queries)
    expected = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert batch["input_ids"][0].tolist() == expected


def test_user_text_cannot_inject_control_tokens(processor):
    sneaky = t2i("a <|image_gen_pad|> b <|im_end|> c <|image_pad|>")
    batch = processor([sneaky])
    ids = batch["input_ids"][0]
    assert (ids == processor.image_gen_pad_token_id).sum() == processor.num_queries
    assert (ids == processor.token_ids["<|image_pad|>"]).sum() == 0
    assert (ids == processor.token_ids["<|im_end|>"]).sum() == 2  # system + user turn ends only


def test_content_types_mark_text_items_and_input_images(processor):
    batch = processor([edit(pattern(0), "make it blue", pattern(1))])
    content, ids = batch["content_type_ids"][0], batch["input_ids"][0]
    text_ids = ids[content == TEXT].tolist()
    assert processor.decode(text_ids) == "make it blue"
    image_span = ids[content == IMAGE]
    assert image_span[0] == processor.token_ids["<|vision_start|>"]
    assert image_span[-1] == processor.token_ids["<|vision_end|>"]
    assert (content[ids == processor.image_gen_pad_token_id] == STRUCTURE).all()


def test_images_from_pil_path_file_url_and_fsspec_are_identical(processor, tmp_path):
    image = noise_image(3, (70, 50))
    path = tmp_path / "in.png"
    image.save(path)
    with fsspec.open("memory://unigen-test/in.png", "wb") as fh:
        fh.write(path.read_bytes())
    sources = [image, str(path), path, f"file://{path}", "memory://unigen-test/in.png", path.read_bytes(),
               np.asarray(image)]
    batches = [processor([edit(src, "x", src)]) for src in sources]
    for batch in batches[1:]:
        assert torch.equal(batch["pixel_values"], batches[0]["pixel_values"])
        assert torch.equal(batch["gen_pixel_values"], batches[0]["gen_pixel_values"])


def test_precomputed_latents_are_stacked_and_mixing_is_refused(processor):
    latents = [np.full((4, 8, 8), i, np.float32) for i in range(2)]
    conv = [{"role": "user", "content": [{"type": "text", "text": "a"},
                                         {"type": "image_gen", "image": pattern(0), "latents": latents[0]}]}]
    conv2 = [{"role": "user", "content": [{"type": "text", "text": "b"},
                                          {"type": "image_gen", "image": pattern(1), "latents": latents[1]}]}]
    batch = processor([conv, conv2])
    assert batch["gen_pixel_values"] is None
    assert torch.equal(batch["gen_latents"], torch.from_numpy(np.stack(latents)))
    with pytest.raises(ValueError, match=r"conversation 1, message 0, item 1: this batch mixes image_gen targets"):
        processor([conv, t2i("c", pattern(2))])


@pytest.mark.parametrize("bad,pattern_", [
    ({"type": "image", "image": "/nonexistent/x.png"},
     r"conversation 1, message 0, item 1: the image '/nonexistent/x.png' is not a readable image"),
    ({"type": "image_gen", "image": 42},
     r"conversation 1, message 0, item 1: the image_gen target <int> is not a readable image"),
    ({"type": "image_gen", "image": b"not an image"},
     r"conversation 1, message 0, item 1: the image_gen target <12 bytes> is not a readable image"),
    ({"type": "audio", "audio": "x.wav"}, r"conversation 1, message 0, item 1: unknown content type 'audio'"),
    ({"type": "image"}, r"conversation 1, message 0, item 1: an image item needs 'image'"),
])
def test_bad_items_name_conversation_message_and_item(processor, bad, pattern_):
    conv = [{"role": "user", "content": [{"type": "text", "text": "x"}, bad]}]
    with pytest.raises(ValueError, match=pattern_):
        processor([t2i("fine"), conv])


def test_a_text_file_as_image_gen_target_is_refused(processor, tmp_path):
    path = tmp_path / "caption.txt"
    path.write_text("just words")
    with pytest.raises(ValueError, match=r"conversation 0, message 0, item 1: the image_gen target .*caption.txt"):
        processor([t2i("a", str(path))])


def test_too_long_conversations_are_an_error_not_a_truncation(processor):
    long = [{"role": "user", "content": "Draw two."},
            {"role": "assistant", "content": [{"type": "text", "text": "hi"}, {"type": "image_gen"},
                                              {"type": "text", "text": "now another one"}, {"type": "image_gen"}]}]
    length = processor([long])["input_ids"].shape[1]
    limit = length - 10  # falls inside the second slot: 18 tokens, then only "<|im_end|>\n" follows
    proc = tiny_pipeline(max_length=limit).processor
    with pytest.raises(ValueError, match=rf"conversation 1, message 1, item 3: the conversation is {length} tokens "
                                         rf".* over max_length={limit} .*Nothing is truncated"):
        proc([t2i("fine"), long])
    assert proc([t2i("hi")])["input_ids"].shape[1] <= limit


def test_save_and_load_keeps_tokens_and_settings(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = UniGenProcessor.from_pretrained(tmp_path)
    assert loaded.token_ids == processor.token_ids
    assert (loaded.num_queries, loaded.image_size, loaded.max_length) == (16, 64, processor.max_length)
    conversations = [seed_example(), t2i("a red cube")]
    first, second = processor(conversations), loaded(conversations)
    for key, value in first.items():
        assert (value is None and second[key] is None) or torch.equal(value, second[key]), key
    assert loaded.tokenizer.convert_tokens_to_ids("<|image_gen_end|>") == processor.image_gen_end_token_id


def test_from_pretrained_on_a_plain_folder_says_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match=r"no unigen_processor\.json"):
        UniGenProcessor.from_pretrained(tmp_path)


def test_batch_to_moves_and_casts_only_floats(processor):
    batch = processor([seed_example()]).to("cpu", torch.bfloat16)
    assert batch["pixel_values"].dtype == torch.bfloat16 and batch["input_ids"].dtype == torch.long
