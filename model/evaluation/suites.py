"""Evaluation suites: generate from held-out cases of each task and score them against exact ground truth
with the task's standard metric, beside a trivial baseline scored the same way.

| suite          | cases (``cases``)                     | metrics                                | trivial baseline              |
|----------------|---------------------------------------|----------------------------------------|-------------------------------|
| t2i            | GenEval's six categories, in turn,    | per category, overall; background,     | a picture that ignores its    |
|                | and as many "a <colour> <kind> on a   | colour and shape (of the largest shape | prompt (a training scene)     |
|                | <wall> background" prompts; held-out  | for the second set); prompt_use = 1 -  | prompt_use 0                  |
|                | records with swapped captions         | loss matched / loss swapped            |                               |
| edit           | one instruction on a held-out picture | success, change, rest                  | copy the input                |
| edit_multiturn | three instructions, each on the       | success per turn, success              | copy the input                |
|                | model's own previous output           |                                        |                               |
| multi_image    | two pictures in, one out              | success                                | copy the first input          |
| interleaved    | text, picture, two generated steps    | success per step, success              | copy the context picture      |
| depth          | depth map of a picture                | abs_rel, delta1                        | one constant depth            |
| normal         | normal map                            | mean_angle, within_11_25               | every normal facing the camera|
| segmentation   | class map (label set "shapes")        | miou, pixel_acc                        | all background                |
| pose           | skeletons                             | pck (PCK@0.1 of the keypoints' box)    | every joint at the centre     |
| grounding      | box around a referred shape           | acc@0.5, mean_iou                      | the centre half of the image  |
| understanding  | questions answered by ``chat``        | accuracy                               | each kind's most common answer|

Scoring pictures uses the shapes detector (``detect``) and ``scoring``; dense outputs are decoded with the
inverse of their rendering (``decode``) and scored by ``metrics``. Everything is seeded: the same weights
give the same numbers.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from unigen.model.evaluation import cases as C
from unigen.model.evaluation import decode as D
from unigen.model.evaluation import metrics as M
from unigen.model.evaluation import scoring as S
from unigen.model.evaluation.detect import read_image

SUITES = ("t2i", "edit", "edit_multiturn", "multi_image", "interleaved", "depth", "normal", "segmentation",
          "pose", "grounding", "understanding")
# The one figure a table shows per suite (unigen runs, unigen status); every metric is in the results.
PRIMARY = {"t2i": "overall", "edit": "success", "edit_multiturn": "success", "multi_image": "success",
           "interleaved": "success", "depth": "delta1", "normal": "within_11_25", "segmentation": "miou",
           "pose": "pck", "grounding": "acc@0.5", "understanding": "accuracy"}
EXAMPLES = 4  # generated pictures kept per suite, for the artifacts


@dataclass
class SuiteResult:
    suite: str
    metrics: dict[str, float]
    baseline: dict[str, float]
    count: int
    seconds: float = 0.0
    examples: list[tuple[str, Any]] = field(default_factory=list)
    """(file name, PIL image) of the first generated pictures."""

    @property
    def primary(self) -> str:
        return PRIMARY[self.suite]

    def row(self) -> dict[str, Any]:
        """JSON-ready: suite, count, seconds, metrics, baseline."""
        return {"suite": self.suite, "count": self.count, "seconds": round(self.seconds, 2),
                "metrics": self.metrics, "baseline": self.baseline}


class Drawer:
    """The pipeline with fixed sampling settings, in batches, seeded per batch."""

    def __init__(self, pipe, sampling: dict | None = None, seed: int = 0, batch_size: int = 16):
        self.pipe, self.sampling, self.seed, self.batch_size = pipe, dict(sampling or {}), seed, batch_size

    def draw(self, conversations: list, tag: int = 0) -> list[list]:
        """The generated pictures of each conversation (its empty slots in order)."""
        out = []
        for b in range(0, len(conversations), self.batch_size):
            chunk = conversations[b:b + self.batch_size]
            images, _ = self.pipe.generate_conversation(chunk, seed=self.seed + 1000 * tag + b, **self.sampling)
            out += _per_conversation(chunk, images)
        return out


def _per_conversation(conversations: list, images: list) -> list[list]:
    """Split the pipeline's flat list of pictures (slot order within each round, rounds in order) per
    conversation: round k holds the k-th empty slot of every conversation that has one."""
    from unigen.model.pipeline import empty_slots

    counts = [len(empty_slots(c)) for c in conversations]
    out: list[list] = [[] for _ in conversations]
    it = iter(images)
    for k in range(max(counts, default=0)):
        for i, n in enumerate(counts):
            if k < n:
                out[i].append(next(it))
    return out


def run_suites(pipe, suites, samples: int = 48, seed: int = 0, sampling: dict | None = None,
               log: Callable[[str], None] | None = None) -> list[SuiteResult]:
    """Score ``pipe`` on each suite with ``samples`` held-out cases."""
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise ValueError(f"unknown evaluation suite(s) {unknown}; choose from {list(SUITES)}")
    drawer = Drawer(pipe, sampling, seed)
    size = pipe.model.config.image_size
    results = []
    for suite in suites:
        start = time.perf_counter()
        result = RUNNERS[suite](drawer, samples, seed, size)
        result.seconds = time.perf_counter() - start
        results.append(result)
        if log:
            log(f"eval {suite}: {result.primary} {result.metrics[result.primary]:.3f} (baseline "
                f"{result.baseline.get(result.primary, float('nan')):.3f}, {result.count} cases, {result.seconds:.0f} s)")
    return results


def _mean(flags: list[dict], key: str) -> float:
    values = [f[key] for f in flags if key in f]
    return float(np.mean(values)) if values else float("nan")


def _examples(name: str, pictures: list) -> list[tuple[str, Any]]:
    return [(f"{name}-{i}.png", p) for i, p in enumerate(pictures[:EXAMPLES])]


# -- text to image --------------------------------------------------------------------------------------

def _t2i(drawer: Drawer, samples: int, seed: int, size: int) -> SuiteResult:
    """``samples`` GenEval prompts (the six families in turn) and ``samples`` attribute prompts ("a <colour>
    <kind> on a <wall> background"), so each attribute accuracy rests on ``samples`` pictures."""
    from unigen.model.data.synth.prompts import FAMILIES

    cases = C.t2i_cases(samples, size, seed) + C.t2i_cases(samples, size, seed, family="colors")
    pictures = [p[0] for p in drawer.draw([c.request for c in cases])]
    baseline_pictures = _prompt_ignoring_pictures(len(cases), size, seed)
    scores = [_t2i_scores(c.truth, read_image(p), size) for c, p in zip(cases, pictures)]
    baseline = [_t2i_scores(c.truth, read_image(p), size) for c, p in zip(cases, baseline_pictures)]

    def summary(rows):
        geneval, probe = rows[:samples], rows[samples:]
        per_family = {f: _mean([r for r in geneval if r["family"] == f], "correct") for f in FAMILIES}
        present = [v for v in per_family.values() if not np.isnan(v)]
        return {**per_family, "overall": float(np.mean(present)) if present else float("nan"),
                "background": _mean(rows, "background"), "colour": _mean(probe, "colour"),
                "shape": _mean(probe, "shape")}

    matched, swapped = caption_swap_losses(drawer.pipe, samples, seed)
    use = {"prompt_use": 1.0 - matched / swapped, "loss_matched": matched, "loss_swapped": swapped}
    return SuiteResult("t2i", {**summary(scores), **use}, {**summary(baseline), "prompt_use": 0.0, "loss_matched": None, "loss_swapped": None}, len(cases),
                       examples=_examples("t2i", pictures))


def caption_swap_losses(pipe, count: int, seed: int = 0) -> tuple[float, float]:
    """The rectified-flow loss on ``count`` held-out text-to-image records with their own captions and with
    each record given another record's caption (the same flow times and noise both times). A model that
    follows its prompt does better with the right caption; ``prompt_use`` = 1 - matched / swapped is 0 for
    one that ignores it (the smoke model before the pretrained tiny world: 0.53689 vs 0.53708)."""
    import torch

    from unigen.model.chat_template import one_turn
    from unigen.model.data.synth import records
    from unigen.model.images import to_pixels

    model, size = pipe.model.eval(), pipe.model.config.image_size  # eval: no CFG dropout of the captions
    captions, pixels = [], []
    for i in range(max(2, count)):
        record = records.t2i(C.HELDOUT_SEED + seed, i)
        captions.append(record["caption"])
        pixels.append(to_pixels(record["image"], size))
    latents = model.encode_latents(torch.stack(pixels))
    losses = []
    for shift in (0, 1):
        conversations = [one_turn(captions[(i + shift) % len(captions)]) for i in range(len(captions))]
        for conversation, latent in zip(conversations, latents):
            conversation[-1]["content"][0]["latents"] = latent
        batch = pipe.processor(conversations).to(model.device)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            losses.append(float(model(**batch).loss))
    return losses[0], losses[1]


def _t2i_scores(request, reading, size: int) -> dict:
    return {"family": request.family, "correct": S.t2i_correct(request, reading, size),
            **S.attributes(request, reading)}


def _prompt_ignoring_pictures(count: int, size: int, seed: int) -> list:
    """What a model that ignores its prompt draws: pictures of training captions of its own."""
    from unigen.model.data.synth.prompts import training_caption
    from unigen.model.data.synth.scenes import render

    out = []
    for i in range(count):
        scene, _ = training_caption(np.random.default_rng([C.HELDOUT_SEED, seed, i, 1]), size, size)
        out.append(render(scene)["rgb"])
    return out


# -- edits and scenes ------------------------------------------------------------------------------------

def _edit(drawer: Drawer, samples: int, seed: int, size: int) -> SuiteResult:
    cases = C.task_cases("edit", samples, size, seed)
    pictures = [p[0] for p in drawer.draw([c.request for c in cases])]
    rows = [S.edit_outcome(read_image(p), read_image(c.targets[0]), read_image(c.inputs[0]))
            for c, p in zip(cases, pictures)]
    copies = [S.edit_outcome(read_image(c.inputs[0]), read_image(c.targets[0]), read_image(c.inputs[0]))
              for c in cases]
    keys = ("success", "change", "rest")
    return SuiteResult("edit", {k: _mean(rows, k) for k in keys}, {k: _mean(copies, k) for k in keys},
                       len(cases), examples=_examples("edit", pictures))


def _edit_multiturn(drawer: Drawer, samples: int, seed: int, size: int, turns: int = 3) -> SuiteResult:
    """Each turn edits the model's own previous output; turn k is scored against the ground truth after
    k instructions (so earlier mistakes carry over, as for a user of ``unigen chat``)."""
    cases = C.task_cases("edit", samples, size, seed, turns=turns)
    sessions = [C.edit_turns(c) for c in cases]
    current = [c.inputs[0] for c in cases]
    history: list[list] = [[] for _ in cases]
    per_turn, shown = [], []
    for k in range(turns):
        requests = []
        for i, session in enumerate(sessions):
            user, _ = session[k]
            texts = [item for item in user["content"] if item["type"] == "text"]
            requests.append(history[i] + [{"role": "user", "content": [{"type": "image", "image": current[i]},
                                                                       *texts]},
                                          {"role": "assistant", "content": [{"type": "image_gen"}]}])
        drawn = [p[0] for p in drawer.draw(requests, tag=k + 1)]
        per_turn.append([S.same_scene(read_image(p), read_image(s[k][1])) for p, s in zip(drawn, sessions)])
        for i, picture in enumerate(drawn):
            history[i] = requests[i][:-1] + [{"role": "assistant", "content": [{"type": "image_gen",
                                                                                "image": picture}]}]
            current[i] = picture
        shown += drawn[:1]
    metrics = {f"success_turn{k + 1}": float(np.mean(v)) for k, v in enumerate(per_turn)}
    metrics["success"] = float(np.mean([np.mean(v) for v in per_turn]))
    copies = [[S.same_scene(read_image(c.inputs[0]), read_image(s[k][1])) for c, s in zip(cases, sessions)]
              for k in range(turns)]
    baseline = {f"success_turn{k + 1}": float(np.mean(v)) for k, v in enumerate(copies)}
    baseline["success"] = float(np.mean([np.mean(v) for v in copies]))
    return SuiteResult("edit_multiturn", metrics, baseline, len(cases), examples=_examples("edit_multiturn", shown))


def _multi_image(drawer: Drawer, samples: int, seed: int, size: int) -> SuiteResult:
    cases = C.task_cases("multi_image", samples, size, seed)
    pictures = [p[0] for p in drawer.draw([c.request for c in cases])]
    right = [S.same_scene(read_image(p), read_image(c.targets[0])) for c, p in zip(cases, pictures)]
    copies = [S.same_scene(read_image(c.inputs[0]), read_image(c.targets[0])) for c in cases]
    return SuiteResult("multi_image", {"success": float(np.mean(right))}, {"success": float(np.mean(copies))},
                       len(cases), examples=_examples("multi_image", pictures))


def _interleaved(drawer: Drawer, samples: int, seed: int, size: int) -> SuiteResult:
    cases = C.task_cases("interleaved", samples, size, seed)
    drawn = drawer.draw([c.request for c in cases])
    steps = min(len(c.targets) for c in cases)
    metrics, baseline = {}, {}
    for k in range(steps):
        metrics[f"success_step{k + 1}"] = float(np.mean(
            [S.same_scene(read_image(d[k]), read_image(c.targets[k])) for c, d in zip(cases, drawn)]))
        baseline[f"success_step{k + 1}"] = float(np.mean(
            [S.same_scene(read_image(c.inputs[0]), read_image(c.targets[k])) for c in cases]))
    metrics["success"] = float(np.mean(list(metrics.values())))
    baseline["success"] = float(np.mean(list(baseline.values())))
    return SuiteResult("interleaved", metrics, baseline, len(cases),
                       examples=_examples("interleaved", [p for d in drawn[:2] for p in d]))


# -- dense, pose, grounding --------------------------------------------------------------------------------

def _dense(task: str):
    def run(drawer: Drawer, samples: int, seed: int, size: int) -> SuiteResult:
        cases = C.task_cases(task, samples, size, seed)
        pictures = [p[0] for p in drawer.draw([c.request for c in cases])]
        options = C.TASK_OPTIONS.get(task, {})
        truths = [_truth(task, c.targets[0], options) for c in cases]
        model = _accumulator(task, options)
        trivial = _accumulator(task, options)
        constant = _constant_prediction(task, truths)
        for truth, picture in zip(truths, pictures):
            model.update(D.decode(task, picture, **options), truth)
            trivial.update(constant(truth), truth)
        keys = {"depth": ("abs_rel", "delta1", "rmse"), "normal": ("mean_angle", "within_11_25"),
                "segmentation": ("miou", "pixel_acc")}[task]
        got, base = model.compute(), trivial.compute()
        return SuiteResult(task, {k: got[k] for k in keys}, {k: base[k] for k in keys}, len(cases),
                           examples=_examples(task, pictures))
    return run


def _truth(task: str, target, options: dict):
    if task == "depth":
        return D.decode_depth(target, options.get("depth_range", (0.1, 100.0)), keep_invalid=True)
    return D.decode(task, target, **options)


def _accumulator(task: str, options: dict):
    if task == "depth":
        lo, hi = options.get("depth_range", (0.1, 100.0))
        return M.DepthMetrics(min_depth=lo, max_depth=hi)
    if task == "normal":
        return M.NormalMetrics()
    return M.SegmentationMetrics(num_classes=D.segmentation_classes(**options))


def _constant_prediction(task: str, truths: list) -> Callable:
    """The trivial baseline's prediction for a ground truth of the same shape."""
    if task == "depth":
        median = float(np.median(np.concatenate([t[t > 0] for t in truths])))
        return lambda truth: np.full(truth.shape, median)
    if task == "normal":
        return lambda truth: np.broadcast_to(np.asarray([0.0, 0.0, 1.0]), truth.shape).copy()
    return lambda truth: np.zeros(truth.shape, np.int64)


def _pose(drawer: Drawer, samples: int, seed: int, size: int) -> SuiteResult:
    cases = C.task_cases("pose", samples, size, seed)
    pictures = [p[0] for p in drawer.draw([c.request for c in cases])]
    model, trivial = M.PCK(), M.PCK()
    centre = [[(size / 2, size / 2)] * 2 for _ in range(17)]
    for case, picture in zip(cases, pictures):
        model.update(D.decode_pose(picture), case.truth)
        trivial.update(centre, case.truth)
    return SuiteResult("pose", {"pck": model.compute()["pck"]}, {"pck": trivial.compute()["pck"]}, len(cases),
                       examples=_examples("pose", pictures))


def _grounding(drawer: Drawer, samples: int, seed: int, size: int) -> SuiteResult:
    cases = C.task_cases("grounding", samples, size, seed)
    pictures = [p[0] for p in drawer.draw([c.request for c in cases])]
    model, trivial = M.GroundingAccuracy(), M.GroundingAccuracy()
    centre = [size / 4, size / 4, 3 * size / 4, 3 * size / 4]
    for case, picture in zip(cases, pictures):
        truth = D.decode_box(case.targets[0])
        model.update(D.decode_box(picture), truth)
        trivial.update(centre, truth)
    keys = ("acc@0.5", "mean_iou")
    got, base = model.compute(), trivial.compute()
    return SuiteResult("grounding", {k: got[k] for k in keys}, {k: base[k] for k in keys}, len(cases),
                       examples=_examples("grounding", pictures))


# -- understanding --------------------------------------------------------------------------------------------

def _understanding(drawer: Drawer, samples: int, seed: int, size: int) -> SuiteResult:
    from unigen.model.evaluation.understanding import heldout_questions, majority_baseline

    questions = heldout_questions(samples, seed)
    score = M.ExactMatch()
    for q in questions:
        score.update(drawer.pipe.chat(q.conversation, max_new_tokens=16), q.answer)
    return SuiteResult("understanding", {"accuracy": score.compute()["accuracy"]},
                       {"accuracy": majority_baseline(questions)}, len(questions))


RUNNERS: dict[str, Callable[[Drawer, int, int, int], SuiteResult]] = {
    "t2i": _t2i, "edit": _edit, "edit_multiturn": _edit_multiturn, "multi_image": _multi_image,
    "interleaved": _interleaved, "depth": _dense("depth"), "normal": _dense("normal"),
    "segmentation": _dense("segmentation"), "pose": _pose, "grounding": _grounding,
    "understanding": _understanding,
}
