"""Shared builders for the model tests: tiny pipelines, images, conversations."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# Qwen2.5-VL-Instruct's chat_template (from its tokenizer_config / chat_template.json), verbatim.
QWEN_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in "
    "messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful "
    "assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string "
    "%}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if "
    "content['type'] == 'image' or 'image' in content or 'image_url' in content %}{% set image_count.value "
    "= image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif "
    "%}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content "
    "%}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value "
    "}}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ "
    "content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if "
    "add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_pipeline(seed: int = 0, **overrides):
    """A fresh tiny UniGenPipeline with deterministic random weights."""
    from unigen.model import UniGenPipeline

    torch.manual_seed(seed)
    return UniGenPipeline.from_preset("tiny", **overrides)


def pattern(index: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    """A distinct, deterministic RGB image per index (stripes over a coloured ground)."""
    width, height = size
    array = np.zeros((height, width, 3), np.uint8)
    array[..., index % 3] = 60 + 40 * (index % 5)
    band = max(1, height // 4)
    start = band * (index % 4)
    array[start:start + band, :, :] = 255 - 30 * (index % 7)
    return Image.fromarray(array)


def noise_image(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    """A deterministic noise image."""
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8))


def seed_example(images=None, targets=True) -> list[dict]:
    """The seed's example: image, text, image_gen, image, image_gen (slot targets optional)."""
    images = images or [pattern(i) for i in range(4)]
    gen_a = {"type": "image_gen", "image": images[1]} if targets else {"type": "image_gen"}
    gen_b = {"type": "image_gen", "image": images[3]} if targets else {"type": "image_gen"}
    return [{"role": "user", "content": [
        {"type": "image", "image": images[0]}, {"type": "text", "text": "Describe this image.\n"},
        gen_a, {"type": "image", "image": images[2]}, gen_b]}]


def t2i(text: str, target=None) -> list[dict]:
    """A text-to-image conversation with one slot (a target when given)."""
    slot = {"type": "image_gen", "image": target} if target is not None else {"type": "image_gen"}
    return [{"role": "user", "content": [{"type": "text", "text": text}, slot]}]


def edit(source, instruction: str, target=None) -> list[dict]:
    """An edit conversation: input image, instruction, one slot."""
    slot = {"type": "image_gen", "image": target} if target is not None else {"type": "image_gen"}
    return [{"role": "user", "content": [{"type": "image", "image": source},
                                         {"type": "text", "text": instruction}, slot]}]
