"""The chat template: the seed's example renders exactly, and plain messages render as Qwen's own template."""
import jinja2
import pytest

from tests.unit.model.model_helpers import QWEN_TEMPLATE, seed_example
from unigen.model.chat_template import check_conversation, render

SYSTEM = "You are a helpful assistant."


def qwen_render(messages, add_generation_prompt):
    return jinja2.Template(QWEN_TEMPLATE).render(messages=messages, add_generation_prompt=add_generation_prompt)


def test_the_seed_example_renders_exactly():
    expected = (
        "<|im_start|>system\n"
        "You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>Describe this image.\n"
        "<|image_gen_start|><|image_gen_pad|><|image_gen_end|>"
        "<|vision_start|><|image_pad|><|vision_end|>"
        "<|image_gen_start|><|image_gen_pad|><|image_gen_end|><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert render(seed_example(), SYSTEM, add_generation_prompt=True) == expected


def test_processor_apply_chat_template_gives_the_same_text():
    from tests.unit.model.model_helpers import tiny_pipeline

    processor = tiny_pipeline().processor
    assert processor.apply_chat_template(seed_example(), add_generation_prompt=True) == \
        render(seed_example(), SYSTEM, True)


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_messages_without_slots_render_as_qwens_template(add_generation_prompt):
    conversations = [
        [{"role": "user", "content": "Hello"}],
        [{"role": "system", "content": "Be terse."},
         {"role": "user", "content": [{"type": "image", "image": "a.png"}, {"type": "text", "text": "What?"}]},
         {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
         {"role": "user", "content": [{"type": "text", "text": "Colour?"}, {"type": "image", "image": "b.png"}]}],
    ]
    for messages in conversations:
        assert render(messages, SYSTEM, add_generation_prompt) == qwen_render(messages, add_generation_prompt)


def test_slots_render_in_any_role_in_order():
    messages = [{"role": "user", "content": [{"type": "text", "text": "Draw a cat, then a dog."}]},
                {"role": "assistant", "content": [{"type": "image_gen"}, {"type": "text", "text": "and"},
                                                  {"type": "image_gen"}]}]
    text = render(messages, SYSTEM, False)
    slot = "<|image_gen_start|><|image_gen_pad|><|image_gen_end|>"
    assert f"<|im_start|>assistant\n{slot}and{slot}<|im_end|>\n" in text
    assert "You are a helpful assistant." in render(messages, SYSTEM, False)
    assert render(messages, "Custom.", False).startswith("<|im_start|>system\nCustom.<|im_end|>\n")


@pytest.mark.parametrize("conversation,pattern", [
    ([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "video", "video": "v.mp4"}]}],
     r"conversation 3, message 0, item 1: unknown content type 'video'; use one of \['text', 'image', 'image_gen'\]"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "text"}]}],
     r"conversation 3, message 1, item 0: a text item needs a string 'text'"),
    ([{"role": "usr", "content": "hi"}], r"conversation 3, message 0: unknown role 'usr'"),
    ([{"role": "user"}], r"conversation 3, message 0: a message is a dict with 'role' and 'content'"),
    ([], r"conversation 3: expected a non-empty list of messages"),
])
def test_bad_conversations_name_where_and_what_to_do(conversation, pattern):
    with pytest.raises(ValueError, match=pattern):
        check_conversation(conversation, 3)
