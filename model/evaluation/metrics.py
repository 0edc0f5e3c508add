"""The standard metric of every task, usable on real benchmarks as well as on the synthetic corpus.

Dense tasks (depth, normals, segmentation) live in ``metrics_dense`` and are re-exported here; this file
holds pose (PCK), grounding (box IoU, acc@0.5) and understanding (VQA-normalised exact match). Every
metric is a function over one example plus an accumulator over a split with ``update(...)``,
``compute() -> dict`` and ``count`` (numpy only: no torch, so scoring never needs a GPU).
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from unigen.model.evaluation.metrics_dense import (  # re-exported: one import site for every metric
    DepthMetrics, NormalMetrics, SegmentationMetrics, align_depth, angular_errors, confusion_matrix,
    depth_metrics, iou_per_class, normal_metrics, segmentation_metrics)

__all__ = ["DepthMetrics", "NormalMetrics", "SegmentationMetrics", "align_depth", "angular_errors",
           "confusion_matrix", "depth_metrics", "iou_per_class", "normal_metrics", "segmentation_metrics",
           "pck", "PCK", "box_iou", "GroundingAccuracy", "normalize_answer", "exact_match", "ExactMatch"]

NUM_KEYPOINTS = 17


# -- pose ----------------------------------------------------------------------------------------------

def _persons(persons) -> list[np.ndarray]:
    out = []
    for i, p in enumerate(persons):
        p = np.asarray(p, np.float64)
        if p.shape != (NUM_KEYPOINTS, 3):
            raise ValueError(f"persons[{i}]: expected a {NUM_KEYPOINTS} x 3 array (x, y, v), got shape {p.shape}")
        out.append(p)
    return out


def _thresholds(persons: list[np.ndarray], boxes, alpha: float) -> np.ndarray:
    """alpha * max(box width, box height) per person; without boxes, the box around the person's
    labelled keypoints (tighter than a person box, so stricter: say so when reporting)."""
    if boxes is None:
        sizes = []
        for p in persons:
            xy = p[p[:, 2] > 0, :2]
            sizes.append(float((xy.max(0) - xy.min(0)).max()) if len(xy) else 0.0)
        return alpha * np.asarray(sizes)
    boxes = np.asarray(boxes, np.float64) if len(boxes) else np.zeros((0, 4))
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes: expected one xyxy box (4 numbers) per person, got shape {boxes.shape}")
    if len(boxes) != len(persons):
        raise ValueError(f"boxes: {len(boxes)} boxes for {len(persons)} persons (one xyxy box each)")
    return alpha * np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def _match_greedy(dist: np.ndarray) -> int:
    """Number of (gt, candidate) pairs with normalised distance <= 1 when pairs are taken closest first,
    each gt and each candidate at most once."""
    rows, cols = np.nonzero(dist <= 1.0)
    used_r, used_c, hits = set(), set(), 0
    for k in np.argsort(dist[rows, cols], kind="stable"):
        r, c = rows[k], cols[k]
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            hits += 1
    return hits


def pck(candidates, persons, boxes=None, alpha: float = 0.1) -> dict[str, float]:
    """Percentage of Correct Keypoints of one image (Yang & Ramanan 2013, PCK@alpha of the person box;
    MMPose's PCKAccuracy with norm_item="bbox").

    candidates: for each of the 17 COCO keypoint types, a list of predicted (x, y), exactly what
    ``render.pose.decode`` returns (it does not group joints into persons). persons: ground-truth arrays
    17 x 3 (x, y, v); boxes: one xyxy box per person, or None (see ``_thresholds``). A labelled gt
    keypoint (v > 0) is correct when a candidate of its type lies within alpha * max(w, h) of its box.
    With several persons, candidates are assigned greedily per keypoint type, closest (in units of each
    person's threshold) first, each candidate used once: one predicted wrist cannot count for two people.
    Returns pck (nan with no labelled keypoint), count (labelled keypoints) and correct.
    """
    if len(candidates) != NUM_KEYPOINTS:
        raise ValueError(f"candidates: expected {NUM_KEYPOINTS} lists of (x, y), one per keypoint type, "
                         f"got {len(candidates)}")
    if not alpha > 0:
        raise ValueError(f"alpha: expected a positive fraction of the box size, got {alpha}")
    persons = _persons(persons)
    thr = _thresholds(persons, boxes, alpha)
    count = correct = 0
    for k in range(NUM_KEYPOINTS):
        labelled = [i for i, p in enumerate(persons) if p[k, 2] > 0]
        count += len(labelled)
        cands = np.asarray(candidates[k], np.float64).reshape(-1, 2)
        if not labelled or not len(cands):
            continue
        gt = np.stack([persons[i][k, :2] for i in labelled])
        d = np.linalg.norm(gt[:, None, :] - cands[None, :, :], axis=-1)
        correct += _match_greedy(d / np.maximum(thr[labelled], 1e-12)[:, None])
    return {"pck": correct / count if count else np.nan, "count": count, "correct": correct}


class PCK:
    """PCK of a split, pooled over all labelled keypoints (as in the benchmarks). ``count``: keypoints."""

    def __init__(self, alpha: float = 0.1):
        if not alpha > 0:
            raise ValueError(f"alpha: expected a positive fraction of the box size, got {alpha}")
        self.alpha, self.count, self.correct, self.images = alpha, 0, 0, 0

    def update(self, candidates, persons, boxes=None) -> dict[str, float]:
        m = pck(candidates, persons, boxes, self.alpha)
        self.count += m["count"]
        self.correct += m["correct"]
        self.images += 1
        return m

    def compute(self) -> dict[str, float]:
        return {"pck": self.correct / self.count if self.count else np.nan, "count": self.count}


# -- grounding -----------------------------------------------------------------------------------------

def _box(box, name: str) -> np.ndarray:
    b = np.asarray(box, np.float64).reshape(-1)
    if b.shape != (4,) or not np.isfinite(b).all():
        raise ValueError(f"{name}: expected 4 finite numbers x0, y0, x1, y1, got {box!r}")
    return b


def box_iou(a, b) -> float:
    """Intersection over union of two xyxy boxes; 0 when either is empty (x1 <= x0 or y1 <= y0)."""
    a, b = _box(a, "a"), _box(b, "b")
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda x: max(0.0, x[2] - x[0]) * max(0.0, x[3] - x[1])  # noqa: E731
    union = area(a) + area(b) - iw * ih
    return float(iw * ih / union) if union > 0 else 0.0


class GroundingAccuracy:
    """RefCOCO accuracy: a prediction is right when its IoU with the referred box is >= ``threshold``
    (0.5, the standard). A missing prediction (None: no box found in the generated image) is wrong and
    has IoU 0. Reports ``acc@<threshold>``, ``mean_iou`` and ``count`` (expressions)."""

    def __init__(self, threshold: float = 0.5):
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold: expected an IoU in (0, 1], got {threshold}")
        self.threshold, self.key = threshold, f"acc@{threshold:g}"
        self.count = self.correct = 0
        self.iou_sum = 0.0

    def update(self, pred, target) -> float:
        iou = 0.0 if pred is None else box_iou(pred, _box(target, "target"))
        self.count += 1
        self.correct += iou >= self.threshold
        self.iou_sum += iou
        return iou

    def compute(self) -> dict[str, float]:
        n = self.count
        return {self.key: self.correct / n if n else np.nan, "mean_iou": self.iou_sum / n if n else np.nan,
                "count": n}


# -- understanding -------------------------------------------------------------------------------------

# The VQA evaluation's normalisation (Antol et al. 2015, vqaEval.py): number words up to ten become
# digits, articles go, punctuation goes (a comma inside a number too: 1,000 == 1000).
_NUMBERS = {w: str(i) for i, w in enumerate(
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"))}
_NUMBERS["none"] = "0"
_ARTICLES = {"a", "an", "the"}
_PUNCT = re.compile(r"""[;/\[\]"{}()=+\\_\-><@`,?!*#%^&$~|:]""")


def normalize_answer(text: str) -> str:
    """Lowercase, punctuation stripped (a period only outside decimals, apostrophes dropped so "don't"
    == "dont"), articles removed, number words as digits, whitespace collapsed."""
    s = str(text).lower().replace("\n", " ").replace("\t", " ").strip()
    s = re.sub(r"(?<=\d),(?=\d)", "", s)
    s = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", s).replace("'", "")
    s = _PUNCT.sub(" ", s)
    words = [_NUMBERS.get(w, w) for w in s.split() if w not in _ARTICLES]
    return " ".join(words)


def exact_match(prediction, answers) -> bool:
    """True when the normalised prediction equals one normalised acceptable answer (a string or a list);
    a missing prediction (None) is wrong."""
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, Sequence) or not answers:
        raise ValueError(f"answers: expected a string or a non-empty list of strings, got {answers!r}")
    if prediction is None:
        return False
    pred = normalize_answer(prediction)
    return any(pred == normalize_answer(a) for a in answers)


class ExactMatch:
    """Accuracy of a split: the fraction of questions answered with an acceptable answer."""

    def __init__(self):
        self.count = self.correct = 0

    def update(self, prediction, answers) -> bool:
        hit = exact_match(prediction, answers)
        self.count += 1
        self.correct += hit
        return hit

    def compute(self) -> dict[str, float]:
        return {"accuracy": self.correct / self.count if self.count else np.nan, "count": self.count}
