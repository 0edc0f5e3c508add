"""The understanding suite: held-out questions about shapes pictures, answered by the backbone's ``chat``.

unigen keeps the backbone frozen so that it still understands: the same questions asked before and after
unigen training must get the same answers. The questions are the kinds the tiny world's backbone was
pretrained on (unigen.model.tinyworld.language), about scenes drawn from a seed stream of their own, so
none is a training picture; the score is exact match (``metrics.ExactMatch``); the trivial baseline is the
most frequent answer of each question kind, given for every question.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

HELDOUT_STREAM = 7_000_001  # seeds the held-out scenes; training draws from its own seed's stream


@dataclass(frozen=True)
class Question:
    conversation: list
    """user [image, question] (no answer)."""
    answer: str
    kind: str
    """The question's template with the scene's words removed (e.g. "What colour is the {kind}?")."""


def heldout_questions(count: int, seed: int = 0) -> list[Question]:
    """``count`` questions, one per held-out scene, the same for the same seed."""
    from PIL import Image

    from unigen.model.data.synth.scenes import random_scene, render
    from unigen.model.tinyworld.language import IMAGE_SIDE, questions

    out = []
    for i in range(count):
        rng = np.random.default_rng([HELDOUT_STREAM, seed, i])
        scene = random_scene(rng, IMAGE_SIDE, IMAGE_SIDE, 1, 4)
        options = questions(scene, rng)
        question, answer = options[int(rng.integers(len(options)))]
        image = Image.fromarray(render(scene)["rgb"])
        conversation = [{"role": "user", "content": [{"type": "image", "image": image},
                                                     {"type": "text", "text": question}]}]
        out.append(Question(conversation, answer, _kind(question)))
    return out


def _kind(question: str) -> str:
    from unigen.model.data.synth.scenes import BACKGROUNDS, COLOURS, KINDS

    words = []
    for word in question.rstrip("?").split():
        if word in COLOURS or word in BACKGROUNDS:
            word = "{colour}"
        elif word.rstrip("s") in KINDS:
            word = "{kind}"
        words.append(word)
    return " ".join(words) + "?"


def majority_baseline(cases: list[Question]) -> float:
    """Accuracy of answering every question with its kind's most frequent answer (among these cases)."""
    by_kind: dict[str, Counter] = {}
    for case in cases:
        by_kind.setdefault(case.kind, Counter())[case.answer] += 1
    return sum(counts.most_common(1)[0][1] for counts in by_kind.values()) / max(1, len(cases))
