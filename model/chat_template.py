"""Conversation checking and Qwen2.5-VL's chat template with image_gen slots (pure Python, no torch).

A conversation is a list of messages ``{"role": ..., "content": [items] | str}``; items are
``{"type": "text", "text": str}``, ``{"type": "image", "image": <PIL|path|URL>}`` and
``{"type": "image_gen", "image": <target, optional>, "latents": <optional>}``.

Rendering follows Qwen2.5-VL's template exactly (default system prompt, ``<|im_start|>role\\n ...
<|im_end|>\\n``) with images as ``<|vision_start|><|image_pad|><|vision_end|>`` and slots as
``<|image_gen_start|><|image_gen_pad|><|image_gen_end|>``, in order, in any role. The renderer yields
segments rather than one string so the processor can tokenize content text without ever parsing special
tokens out of user text (a caption containing "<|im_end|>" stays text).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VISION_START, IMAGE_PAD, VISION_END = "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"
IMAGE_GEN_START, IMAGE_GEN_PAD, IMAGE_GEN_END = "<|image_gen_start|>", "<|image_gen_pad|>", "<|image_gen_end|>"
SLOT_TOKENS = (IMAGE_GEN_START, IMAGE_GEN_PAD, IMAGE_GEN_END)

CONTENT_TYPES = ("text", "image", "image_gen")
ROLES = ("system", "user", "assistant", "tool")

# What a token is, for classifier-free-guidance dropout (see unigen.model.cfg_dropout).
STRUCTURE, TEXT, IMAGE = 0, 1, 2


@dataclass(frozen=True)
class Segment:
    """One piece of a rendered conversation.

    kind: "special" (value = a special token), "text" (value = a string), "image" or "image_gen"
    (value = the item dict). ``content`` is STRUCTURE for template text, TEXT for a text item's text.
    ``message``/``item`` locate the piece in the conversation (item None for template pieces).
    """

    kind: str
    value: Any
    content: int
    message: int | None
    item: int | None


def where(conversation: int, message: int | None = None, item: int | None = None) -> str:
    """'conversation 0, message 1, item 2' for error messages."""
    parts = [f"conversation {conversation}"]
    if message is not None:
        parts.append(f"message {message}")
    if item is not None:
        parts.append(f"item {item}")
    return ", ".join(parts)


def content_items(message: dict) -> list[dict]:
    """The message's items (a string content is one text item)."""
    content = message["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def one_turn(prompt: str, images: Any = ()) -> list[dict]:
    """The conversation of a plain request, laid out as every task adapter lays out a training sample:
    user [input images..., text], then an assistant turn holding one ``image_gen`` slot (the images come
    first so the text can refer to them: "put the circle of the second image into the first"). What
    ``unigen generate --prompt`` and a text entry of the recipe's eval.prompts draw. ``images``: one
    image or a sequence of them."""
    if images is None or not isinstance(images, (list, tuple)):
        images = () if images is None else (images,)
    content = [{"type": "image", "image": image} for image in images] + [{"type": "text", "text": prompt}]
    return [{"role": "user", "content": content}, {"role": "assistant", "content": [{"type": "image_gen"}]}]


def check_conversation(conversation: Any, index: int = 0) -> None:
    """Raise ValueError naming conversation/message/item for a malformed conversation."""
    if not isinstance(conversation, (list, tuple)) or not conversation:
        raise ValueError(f"{where(index)}: expected a non-empty list of messages "
                         f"{{'role': ..., 'content': [...]}}, got {type(conversation).__name__}")
    for m, message in enumerate(conversation):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(f"{where(index, m)}: a message is a dict with 'role' and 'content', got "
                             f"{message!r:.80}")
        if message["role"] not in ROLES:
            raise ValueError(f"{where(index, m)}: unknown role {message['role']!r}; use one of {list(ROLES)}")
        content = message["content"]
        if isinstance(content, str):
            continue
        if not isinstance(content, (list, tuple)):
            raise ValueError(f"{where(index, m)}: content must be a string or a list of items, got "
                             f"{type(content).__name__}")
        for i, item in enumerate(content):
            _check_item(item, index, m, i)


def _check_item(item: Any, c: int, m: int, i: int) -> None:
    if not isinstance(item, dict) or item.get("type") not in CONTENT_TYPES:
        got = item.get("type") if isinstance(item, dict) else type(item).__name__
        raise ValueError(f"{where(c, m, i)}: unknown content type {got!r}; use one of {list(CONTENT_TYPES)} "
                         "(e.g. {'type': 'text', 'text': '...'})")
    if item["type"] == "text" and not isinstance(item.get("text"), str):
        raise ValueError(f"{where(c, m, i)}: a text item needs a string 'text', got {item.get('text')!r:.60}")


def iter_segments(conversation: list[dict], system_prompt: str, add_generation_prompt: bool,
                  index: int = 0) -> Iterator[Segment]:
    """Qwen2.5-VL's chat template, piece by piece (checks the conversation first)."""
    check_conversation(conversation, index)
    if conversation[0]["role"] != "system":
        yield Segment("special", IM_START, STRUCTURE, None, None)
        yield Segment("text", f"system\n{system_prompt}", STRUCTURE, None, None)
        yield Segment("special", IM_END, STRUCTURE, None, None)
        yield Segment("text", "\n", STRUCTURE, None, None)
    for m, message in enumerate(conversation):
        yield Segment("special", IM_START, STRUCTURE, m, None)
        yield Segment("text", f"{message['role']}\n", STRUCTURE, m, None)
        for i, item in enumerate(content_items(message)):
            if item["type"] == "text":
                yield Segment("text", item["text"], TEXT, m, i)
            else:
                yield Segment(item["type"], item, IMAGE if item["type"] == "image" else STRUCTURE, m, i)
        yield Segment("special", IM_END, STRUCTURE, m, None)
        yield Segment("text", "\n", STRUCTURE, m, None)
    if add_generation_prompt:
        yield Segment("special", IM_START, STRUCTURE, None, None)
        yield Segment("text", "assistant\n", STRUCTURE, None, None)


def render(conversation: list[dict], system_prompt: str, add_generation_prompt: bool, index: int = 0) -> str:
    """The template as one string, each image and slot as a single pad token."""
    out = []
    for seg in iter_segments(conversation, system_prompt, add_generation_prompt, index):
        if seg.kind in ("special", "text"):
            out.append(seg.value)
        elif seg.kind == "image":
            out.append(VISION_START + IMAGE_PAD + VISION_END)
        else:
            out.append(IMAGE_GEN_START + IMAGE_GEN_PAD + IMAGE_GEN_END)
    return "".join(out)


def jinja_template(system_prompt: str) -> str:
    """``render`` as a Jinja chat template, for the tokenizer and processor files of an export, so that
    transformers' own ``apply_chat_template(messages, tokenize=False)`` gives exactly unigen's text.

    transformers compiles templates with trim_blocks and lstrip_blocks, which eat newlines written after
    a block tag: every newline here is therefore an expression (``{{ '\\n' }}``), never template text. The
    system prompt is a string literal (JSON escaping is valid Jinja escaping; non-ASCII kept as is)."""
    import json

    newline = "{{ '\\n' }}"
    system = "{{ " + json.dumps(system_prompt, ensure_ascii=False) + " }}"
    return "".join([
        "{%- for message in messages -%}",
        "{%- if loop.first and message['role'] != 'system' -%}",
        f"{IM_START}system{newline}{system}{IM_END}{newline}",
        "{%- endif -%}",
        f"{IM_START}{{{{ message['role'] }}}}{newline}",
        "{%- if message['content'] is string -%}{{ message['content'] }}",
        "{%- else -%}{%- for item in message['content'] -%}",
        "{%- if item['type'] == 'text' -%}{{ item['text'] }}",
        f"{{%- elif item['type'] == 'image' -%}}{VISION_START}{IMAGE_PAD}{VISION_END}",
        f"{{%- elif item['type'] == 'image_gen' -%}}{IMAGE_GEN_START}{IMAGE_GEN_PAD}{IMAGE_GEN_END}",
        "{%- endif -%}{%- endfor -%}{%- endif -%}",
        f"{IM_END}{newline}",
        "{%- endfor -%}",
        f"{{%- if add_generation_prompt -%}}{IM_START}assistant{newline}{{%- endif -%}}",
    ])
