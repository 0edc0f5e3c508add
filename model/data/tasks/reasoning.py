"""Reasoning chains before the image: the ``reasoning`` option of the t2i and edit adapters.

GoT (Generation Chain-of-Thought, arXiv 2503.10639) pairs each prompt or edit instruction with a
reasoning chain: a detailed description of the image with the objects' boxes. Its datasets keep the
chain in a column beside the prompt (``got``); OmniEdit-GoT writes box placeholders in the chain and
their coordinates in a JSON column (``coord``), substituted here as a published OmniEdit-GoT loader does.

``options.reasoning`` says where the chain goes (default: nowhere, the plain prompt is trained):
- ``input``: the user's text is the prompt, a blank line, then the chain (the image is conditioned on both);
- ``answer``: GoT's order: the user gives the prompt, the assistant writes the chain, then the image.
"""
from __future__ import annotations

import json

from unigen.model.data import fields as F
from unigen.model.data.errors import BadRecord, DataError

MODES = ("input", "answer")
FIELDS = {"reasoning": "got", "boxes": "coord"}
OPTION = {"reasoning": None}


def mode(options: dict, where: str) -> str | None:
    """The validated ``options.reasoning`` (None when off; YAML's ``off``/``false`` also mean off)."""
    value = options.get("reasoning")
    if value in (None, False, "none"):
        return None
    if value not in MODES:
        raise DataError(f"{where}.options.reasoning: {value!r} is not a mode; use one of {list(MODES)} "
                        "(or leave it out to train on the plain prompt)")
    return value


def chain(record: dict, fields: dict, what: str = "reasoning") -> str:
    """The record's reasoning text with its box placeholders (if a ``boxes`` mapping is present)
    replaced by their coordinates."""
    text = F.as_text(F.lookup(record, fields["reasoning"]), what)
    boxes = F.lookup_optional(record, fields.get("boxes"))
    if boxes is None:
        return text
    if isinstance(boxes, (bytes, str)):
        try:
            boxes = json.loads(boxes)
        except ValueError:
            raise BadRecord(f"{fields['boxes']}: not JSON (expected an object of placeholder -> box)") from None
    if not isinstance(boxes, dict):
        raise BadRecord(f"{fields['boxes']}: expected an object of placeholder -> box, got {type(boxes).__name__}")
    # Longest placeholder first, so one that is a prefix of another ("<box_1>" / "<box_10>") cannot
    # eat part of it.
    for key in sorted(boxes, key=len, reverse=True):
        text = text.replace(str(key), json.dumps(boxes[key]))
    return text


def user_text(prompt: str, reasoning: str | None, how: str | None) -> str:
    """What the user says: the prompt, followed by the chain in ``input`` mode."""
    return f"{prompt}\n\n{reasoning}" if how == "input" and reasoning else prompt


def answer_items(reasoning: str | None, how: str | None) -> list[dict]:
    """Text items the assistant writes before its image (the chain in ``answer`` mode)."""
    return [{"type": "text", "text": reasoning}] if how == "answer" and reasoning else []
