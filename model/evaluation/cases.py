"""Held-out cases of every suite, from the shapes world, with their exact ground truth.

Every case is made the way the training data is: a synthetic record (``unigen.model.data.synth.records``,
drawn from a seed no training corpus uses) converted by the task's own adapter, so the request has the
training layout and the ground-truth target is the adapter's own rendering at the model's image size.
The request is that conversation with its targets taken out of the ``image_gen`` slots (and, for
interleaved documents, without the fed-back copies of the targets: the pipeline feeds back what it drew).
Text-to-image cases come from ``unigen.model.data.synth.prompts`` (GenEval's categories).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HELDOUT_SEED = 1_000_003  # the synthetic records' seed for held-out cases (corpora use 0 unless told)
# The adapter options the smoke and shapes recipes train with (a case is scored with the inverse of the
# rendering its model learnt).
TASK_OPTIONS = {"depth": {"depth_range": [1.0, 10.0]}, "segmentation": {"label_set": "shapes"}}
IMAGE_TASKS = ("edit", "multi_image", "interleaved", "depth", "normal", "segmentation", "pose", "grounding")


@dataclass
class Case:
    suite: str
    request: list
    """The conversation to generate from (empty image_gen slots)."""
    targets: list
    """The ground-truth image of each empty slot, in order (PIL)."""
    inputs: list = field(default_factory=list)
    """The request's input images (PIL), for copy-the-input baselines."""
    truth: Any = None
    """Suite-specific ground truth: the prompt's Request (t2i), people (pose)."""


def t2i_cases(count: int, image_size: int, seed: int = 0, family: str | None = None) -> list[Case]:
    """``count`` prompts, the GenEval families in turn (or only ``family``), each with a scene that
    satisfies it."""
    from unigen.model.chat_template import one_turn
    from unigen.model.data.synth.prompts import FAMILIES, sample

    out = []
    for i in range(count):
        rng = np.random.default_rng([HELDOUT_SEED, seed, i, FAMILIES.index(family) + 1 if family else 0])
        request = sample(family or FAMILIES[i % len(FAMILIES)], rng, image_size, image_size)
        out.append(Case("t2i", one_turn(request.prompt), [], truth=request))
    return out


def task_cases(task: str, count: int, image_size: int, seed: int = 0, turns: int = 1) -> list[Case]:
    """``count`` held-out cases of an image task (``IMAGE_TASKS``), converted by the task's adapter."""
    from unigen.model.data.spec import SourceSpec
    from unigen.model.data.synth import records
    from unigen.model.data.tasks import make_adapter
    from unigen.model.data.tasks.base import SampleContext

    spec = SourceSpec.model_validate({"name": f"heldout-{task}", "uri": "heldout", "format": "synthetic",
                                      "task": task, "options": dict(TASK_OPTIONS.get(task, {}))})
    adapter = make_adapter(spec, image_size, where=f"eval {task}")
    out = []
    for i in range(count):
        options = {"turns": turns} if task == "edit" else {}
        record = records.make(task, HELDOUT_SEED + seed, i, **options)
        ctx = SampleContext(key=f"heldout-{task}-{i}", rng=random.Random(HELDOUT_SEED + i), image_size=image_size)
        conversation = adapter.convert(record, ctx)
        case = _split(task, conversation)
        if task == "pose":
            case.truth = adapter.people(record, adapter.fit(adapter.image(record, "image", ctx))[1])
        out.append(case)
    return out


def _split(task: str, conversation: list) -> Case:
    """The request (targets taken out) and the targets of a training conversation."""
    request, targets, inputs = [], [], []
    for message in conversation:
        items = []
        for item in message["content"]:
            if item["type"] == "image_gen":
                targets.append(item["image"])
                items.append({"type": "image_gen"})
            elif item["type"] == "image" and _is_fed_back(item, targets):
                continue  # interleaved: the copy of a target; the pipeline inserts what it drew
            else:
                if item["type"] == "image":
                    inputs.append(item["image"])
                items.append(item)
        request.append({**message, "content": items})
    return Case(task, request, targets, inputs)


def _is_fed_back(item: dict, targets: list) -> bool:
    return any(item["image"] is t for t in targets)


def edit_turns(case: Case) -> list[tuple[list, Any]]:
    """A multi-turn edit case as its turns: (the turn's user message, its target). The evaluation plays
    them one after the other, each on the model's own previous output (as ``unigen chat`` does)."""
    turns, user = [], None
    for message in case.request:
        if message["role"] == "user":
            user = message
        elif any(item["type"] == "image_gen" for item in message["content"]):
            turns.append((user, case.targets[len(turns)]))
    return turns
