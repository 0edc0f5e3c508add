"""What the tiny world's backbone reads and says: the conversations it is pretrained on, and its vocabulary.

A real Qwen2.5-VL arrives knowing how to describe a picture and answer about it; the tiny one learns the
same on the shapes world, from these conversations (all from a seeded generator, so the build is
deterministic):

- ``caption``: [image] "Describe this image." -> the scene's description;
- ``question``: [image] a short question -> a one-word answer (colour of a shape, shape of a colour, how
  many, the background, is there, left or right, above or below); these are also the held-out
  understanding questions the evaluation asks before and after unigen training;
- ``slot_request`` and ``slot_edit``: a text-to-image request, or [image] an edit instruction, answered by
  one ``image_gen`` slot, with a target for the backbone's states at every query position of the slot:
  the words of the description of the picture to draw (the request itself; the edited scene), as a
  distribution. MetaQuery rests on a large language model whose states at learned query positions can be
  made to carry the request; a 0.9M-parameter one, frozen, does not learn that from unigen's training
  (its states at query positions differ by 0.5 % between "a red circle on a white background" and "... on
  a black background", and a generator trained on them for 600 steps scored matched and swapped captions
  alike), so it is taught here, with random vectors in the slot (as unigen's queries start), to gather the
  request into those positions. The words as a set, not in order: reading the k-th word into the k-th
  query was tried first, and a 4-layer model cannot locate the k-th word of a request of any length (it
  predicted one fixed sentence for every prompt).
"""
from __future__ import annotations

import numpy as np

from unigen.model.data.synth import records
from unigen.model.data.synth.prompts import FAMILIES, sample, training_caption
from unigen.model.data.synth.scenes import (BACKGROUNDS, COLOURS, KINDS, Scene, describe, random_scene,
                                            render)

CAPTION_PROMPT = "Describe this image."
COUNT_WORDS = ("zero", "one", "two", "three", "four")
KIND_WEIGHTS = {"caption": 0.25, "question": 0.35, "slot_request": 0.2, "slot_edit": 0.2}
IMAGE_SIDE = 64

def questions(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Every (question, answer) the scene answers unambiguously, in a fixed order; callers sample."""
    out = [("What colour is the background?", scene.background)]
    for kind in KINDS:
        of_kind = [s for s in scene.shapes if s.kind == kind]
        out.append((f"How many {kind}s are there?", COUNT_WORDS[len(of_kind)]))
        if len(of_kind) == 1:
            out.append((f"What colour is the {kind}?", of_kind[0].colour))
            side = "left" if of_kind[0].cx < scene.width / 2 else "right"
            out.append((f"Is the {kind} on the left or on the right?", side))
    for colour in COLOURS:
        of_colour = [s for s in scene.shapes if s.colour == colour]
        if len(of_colour) == 1:
            out.append((f"What shape is the {colour} object?", of_colour[0].kind))
    colour, kind = list(COLOURS)[int(rng.integers(len(COLOURS)))], KINDS[int(rng.integers(len(KINDS)))]
    present = any(s.colour == colour and s.kind == kind for s in scene.shapes)
    out.append((f"Is there a {colour} {kind}?", "yes" if present else "no"))
    if len(scene.shapes) >= 2:
        a, b = scene.shapes[0], scene.shapes[1]
        if abs(a.cy - b.cy) > abs(a.cx - b.cx):
            out.append((f"Is the {a.name} above or below the {b.name}?", "above" if a.cy < b.cy else "below"))
    return out

def conversation(kind: str, rng: np.random.Generator) -> tuple[list[dict], str | None]:
    """One pretraining conversation of ``kind`` (images as PIL, IMAGE_SIDE square) and, for the slot kinds,
    the description the states at the slot's query positions are trained to read out (else None)."""
    from PIL import Image

    if kind == "slot_request":
        request = _request_text(rng)
        return [_user(None, request), _slot()], request
    if kind == "slot_edit":
        scene = random_scene(rng, IMAGE_SIDE, IMAGE_SIDE)
        instruction, edited = records.random_edit(rng, scene)
        image = Image.fromarray(render(scene)["rgb"])
        return [_user(image, instruction), _slot()], describe(edited, rng)
    scene = random_scene(rng, IMAGE_SIDE, IMAGE_SIDE, 1, 4)
    image = Image.fromarray(render(scene)["rgb"])
    if kind == "caption":
        return [_user(image, CAPTION_PROMPT), _assistant(describe(scene, rng))], None
    if kind == "question":
        options = questions(scene, rng)
        question, answer = options[int(rng.integers(len(options)))]
        return [_user(image, question), _assistant(answer)], None
    raise ValueError(f"unknown conversation kind {kind!r}; choose one of {list(KIND_WEIGHTS)}")


CONTENT = {*COLOURS, *KINDS, *BACKGROUNDS, *COUNT_WORDS, "left", "right", "above", "below"}


def content_words(text: str) -> list[str]:
    """The words of a description that say what is drawn (colours, kinds, walls, counts, sides), in order;
    plurals as their kind ("circles" -> "circle")."""
    out = []
    for word in text.replace(",", " ").replace(".", " ").split():
        word = word[:-1] if word.endswith("s") and word[:-1] in KINDS else word
        if word in CONTENT:
            out.append(word)
    return out


def sample_conversation(rng: np.random.Generator) -> tuple[list[dict], str | None]:
    names = list(KIND_WEIGHTS)
    weights = np.asarray([KIND_WEIGHTS[n] for n in names])
    return conversation(names[int(rng.choice(len(names), p=weights / weights.sum()))], rng)


def _request_text(rng: np.random.Generator) -> str:
    """A request as the image generator will see one: a text-to-image caption or a family prompt."""
    if rng.random() < 0.5:
        return training_caption(rng, IMAGE_SIDE, IMAGE_SIDE)[1]
    return sample(FAMILIES[int(rng.integers(len(FAMILIES)))], rng, IMAGE_SIDE, IMAGE_SIDE).prompt

def _user(image, text: str) -> dict:
    items = ([{"type": "image", "image": image}] if image is not None else []) + [{"type": "text", "text": text}]
    return {"role": "user", "content": items}

def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def _slot() -> dict:
    return {"role": "assistant", "content": [{"type": "image_gen"}]}

def corpus(seed: int = 0, conversations: int = 3000) -> list[str]:
    """Text the tokenizer is trained on, in the proportions the backbone reads it: the text of pretraining
    conversations, plus the task adapters' instructions, the synthetic records' connecting words and the
    chat template's words."""
    from unigen.model.data.tasks import TASKS, adapter_class

    rng = np.random.default_rng(seed)
    lines = ["You are a helpful assistant.", "system", "user", "assistant",
             "Put the red circle from the second image into the first image.", "Here is", "Next,", "Then"]
    for task in TASKS:
        lines += [t.replace("{instruction}", "").replace("{prompt}", "").replace("{caption}", "")
                  .replace("{text}", "the red circle") for t in adapter_class(task).templates]
    for _ in range(conversations):
        lines += ["system", "You are a helpful assistant.", "user", "assistant"]  # every conversation has them
        messages, slot_text = sample_conversation(rng)
        for message in messages:
            lines += [item["text"] for item in message["content"] if item["type"] == "text"]
        lines += [slot_text] if slot_text else []
    return lines
