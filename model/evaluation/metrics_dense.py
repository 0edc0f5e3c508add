"""Standard metrics of the dense tasks: depth, surface normals, semantic segmentation (numpy only).

Each metric is a function over one example and an accumulator over a split (``update`` per example,
``compute() -> dict``, ``count``). The accumulators average the way the published benchmarks do, so
numbers are comparable with papers:

| task         | averaged over                         | as in                                               |
|--------------|---------------------------------------|-----------------------------------------------------|
| depth        | images (per-image metric, then mean)  | Eigen et al. 2014 as coded in Monodepth2, BTS, Marigold |
| normals      | all valid pixels of the split         | Eigen & Fergus 2015; Bae et al. (DSINE)             |
| segmentation | one confusion matrix summed over images | mIoU of PASCAL VOC / ADE20K / Cityscapes (mmseg)  |
"""
from __future__ import annotations

import numpy as np

DEPTH_ALIGN = ("none", "median", "least_squares")
DEPTH_FLOOR = 1e-6  # lowest predicted depth when no min_depth is given: keeps ratios finite
NORMAL_THRESHOLDS = (11.25, 22.5, 30.0)
_HIST_BIN = 0.01  # degrees; the split-level median of angular errors is read from this histogram


def _same_shape(pred: np.ndarray, target: np.ndarray, what: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{what}: pred shape {pred.shape} does not match target shape {target.shape}")


def _mask(mask, shape: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, bool)
    mask = np.asarray(mask, bool)
    if mask.shape != shape:
        raise ValueError(f"mask: shape {mask.shape} does not match target shape {shape}")
    return mask


# -- depth ---------------------------------------------------------------------------------------------

def align_depth(pred: np.ndarray, target: np.ndarray, valid: np.ndarray, align: str,
                floor: float = DEPTH_FLOOR) -> np.ndarray:
    """``pred`` brought to the target's scale on the valid pixels.

    none: metric depth, unchanged. median: times median(gt)/median(pred), the scale-only alignment of
    self-supervised / relative-depth models (Monodepth2). least_squares: s * pred + t with (s, t) fitted
    by least squares, the affine-invariant protocol of MiDaS/Marigold.
    """
    if align not in DEPTH_ALIGN:
        raise ValueError(f"align {align!r}: use one of {', '.join(DEPTH_ALIGN)}")
    if align == "none" or not valid.any():
        return pred
    p, g = pred[valid], target[valid]
    if align == "median":
        return pred * (np.median(g) / np.median(np.maximum(p, floor)))  # a ratio needs positive depth
    a = np.stack([p, np.ones_like(p)], axis=1)
    (s, t), *_ = np.linalg.lstsq(a, g, rcond=None)
    return pred * s + t


def depth_metrics(pred, target, *, align: str = "none", min_depth: float | None = None,
                  max_depth: float | None = None, mask=None) -> dict[str, float]:
    """abs_rel, rmse, delta1..3 of one depth map over its valid ground-truth pixels.

    Valid: gt finite and > 0 (and within [min_depth, max_depth] when given: NYUv2 uses 1e-3..10 m, KITTI
    1e-3..80 m), and inside ``mask`` (e.g. the Eigen/Garg crop). After alignment the prediction is
    clipped to [min_depth, max_depth] as the benchmark code does; a prediction <= 0 or not finite thus
    becomes the floor (min_depth, or 1e-6) instead of producing inf/nan. ``count`` is the number of
    valid pixels; with none, every metric is nan.
    """
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    _same_shape(pred, target, "depth")
    if min_depth is not None and max_depth is not None and not min_depth < max_depth:
        raise ValueError(f"min_depth {min_depth} must be below max_depth {max_depth}")
    valid = _mask(mask, target.shape) & np.isfinite(target) & (target > 0)
    if min_depth is not None:
        valid &= target >= min_depth
    if max_depth is not None:
        valid &= target <= max_depth
    n = int(valid.sum())
    if n == 0:
        return {"abs_rel": np.nan, "rmse": np.nan, "delta1": np.nan, "delta2": np.nan, "delta3": np.nan,
                "count": 0}
    floor = min_depth if min_depth is not None else DEPTH_FLOOR
    top = max_depth if max_depth is not None else np.finfo(np.float64).max
    pred = np.nan_to_num(pred, nan=floor, posinf=top, neginf=floor)
    p = np.clip(align_depth(pred, target, valid, align, floor)[valid], floor, top)
    g = target[valid]
    ratio = np.maximum(p / g, g / p)
    return {"abs_rel": float(np.mean(np.abs(p - g) / g)), "rmse": float(np.sqrt(np.mean((p - g) ** 2))),
            "delta1": float(np.mean(ratio < 1.25)), "delta2": float(np.mean(ratio < 1.25 ** 2)),
            "delta3": float(np.mean(ratio < 1.25 ** 3)), "count": n}


class DepthMetrics:
    """Depth metrics of a split: each image's metrics, then the mean over images.

    Per-image averaging is what the NYUv2/KITTI evaluation code behind published tables does (Eigen et
    al.'s protocol as implemented in Monodepth2/BTS/Marigold): every image weighs the same whatever its
    number of valid pixels, so a sparse KITTI LiDAR frame counts as much as a dense one. Images without
    a valid pixel are skipped. ``count``: images scored; ``pixels``: valid pixels over all of them.
    """

    KEYS = ("abs_rel", "rmse", "delta1", "delta2", "delta3")

    def __init__(self, align: str = "none", min_depth: float | None = None, max_depth: float | None = None):
        if align not in DEPTH_ALIGN:
            raise ValueError(f"align {align!r}: use one of {', '.join(DEPTH_ALIGN)}")
        self.align, self.min_depth, self.max_depth = align, min_depth, max_depth
        self.sums = dict.fromkeys(self.KEYS, 0.0)
        self.count = self.pixels = 0

    def update(self, pred, target, mask=None) -> dict[str, float]:
        m = depth_metrics(pred, target, align=self.align, min_depth=self.min_depth,
                          max_depth=self.max_depth, mask=mask)
        if m["count"]:
            for k in self.KEYS:
                self.sums[k] += m[k]
            self.count += 1
            self.pixels += m["count"]
        return m

    def compute(self) -> dict[str, float]:
        """Means over the scored images (nan for an empty split)."""
        out = {k: (v / self.count if self.count else np.nan) for k, v in self.sums.items()}
        return {**out, "count": self.count, "pixels": self.pixels}


# -- surface normals -----------------------------------------------------------------------------------

def angular_errors(pred, target, mask=None) -> np.ndarray:
    """Angles in degrees between predicted and true normals at the valid pixels (1-D array).

    Valid: the gt is a finite non-zero vector (and inside ``mask``). Both are renormalised, so a decoded
    8-bit normal is not penalised for its length. A zero (or non-finite) prediction scores 90 degrees:
    the expected error of a direction guessed at random, never nan.
    """
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    _same_shape(pred, target, "normals")
    if target.ndim < 1 or target.shape[-1] != 3:
        raise ValueError(f"normals: expected ...x3 vectors, got shape {target.shape}")
    valid = _mask(mask, target.shape[:-1]) & np.isfinite(target).all(-1)
    valid &= np.linalg.norm(np.nan_to_num(target), axis=-1) > 1e-6
    g, p = target[valid], np.nan_to_num(pred[valid], nan=0.0, posinf=0.0, neginf=0.0)
    g = g / np.linalg.norm(g, axis=-1, keepdims=True)
    plen = np.linalg.norm(p, axis=-1)
    zero = plen <= 1e-6
    p = p / np.maximum(plen, 1e-12)[:, None]
    # atan2(|a x b|, a.b) is exact at 0 degrees, where arccos(a.b) loses half its digits.
    err = np.degrees(np.arctan2(np.linalg.norm(np.cross(p, g), axis=-1), (p * g).sum(-1)))
    err[zero] = 90.0
    return err


def _normal_summary(err_sum: float, under: dict[float, int], n: int, median: float) -> dict[str, float]:
    if n == 0:
        return {"mean_angle": np.nan, "median_angle": np.nan,
                **{f"within_{_tag(t)}": np.nan for t in NORMAL_THRESHOLDS}, "count": 0}
    return {"mean_angle": err_sum / n, "median_angle": median,
            **{f"within_{_tag(t)}": under[t] / n for t in NORMAL_THRESHOLDS}, "count": n}


def _tag(threshold: float) -> str:
    return f"{threshold:g}".replace(".", "_")  # 11.25 -> "11_25", 30 -> "30"


def normal_metrics(pred, target, mask=None) -> dict[str, float]:
    """mean_angle, median_angle (degrees) and within_11_25 / within_22_5 / within_30 (fraction of valid
    pixels with an error below the threshold) of one normal map; ``count`` valid pixels."""
    err = angular_errors(pred, target, mask)
    under = {t: int((err < t).sum()) for t in NORMAL_THRESHOLDS}
    return _normal_summary(float(err.sum()), under, err.size,
                           float(np.median(err)) if err.size else np.nan)


class NormalMetrics:
    """Normal metrics of a split, pooled over all valid pixels (the convention of Eigen & Fergus and of
    every normal benchmark since). The median comes from a 0.01-degree histogram, so memory stays fixed
    however large the split; mean and threshold fractions are exact. ``count``: valid pixels."""

    def __init__(self):
        self.hist = np.zeros(int(round(180 / _HIST_BIN)) + 1, np.int64)
        self.err_sum = 0.0
        self.under = dict.fromkeys(NORMAL_THRESHOLDS, 0)
        self.count = self.images = 0

    def update(self, pred, target, mask=None) -> None:
        err = angular_errors(pred, target, mask)
        self.hist += np.bincount(np.minimum((err / _HIST_BIN).astype(np.int64), self.hist.size - 1),
                                 minlength=self.hist.size)
        self.err_sum += float(err.sum())
        for t in NORMAL_THRESHOLDS:
            self.under[t] += int((err < t).sum())
        self.count += err.size
        self.images += 1

    def compute(self) -> dict[str, float]:
        median = np.nan
        if self.count:
            b = int(np.searchsorted(np.cumsum(self.hist), (self.count + 1) / 2))
            median = (b + 0.5) * _HIST_BIN
        return _normal_summary(self.err_sum, self.under, self.count, median)


# -- semantic segmentation -----------------------------------------------------------------------------

def confusion_matrix(pred, target, num_classes: int, ignore_index: int | None = 255) -> np.ndarray:
    """num_classes x (num_classes + 1) pixel counts, rows = true class, columns = predicted class; the
    last column counts predictions outside 0..num_classes-1 (e.g. a decoded "ignore" colour), which are
    wrong for the true class but a false positive of none. Pixels whose gt is ``ignore_index`` are left
    out; any other gt outside 0..num_classes-1 is an error."""
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes: expected a positive integer, got {num_classes!r}")
    pred, target = np.asarray(pred).astype(np.int64), np.asarray(target).astype(np.int64)
    _same_shape(pred, target, "segmentation")
    keep = target != ignore_index if ignore_index is not None else np.ones(target.shape, bool)
    t, p = target[keep], pred[keep]
    if t.size and (t.min() < 0 or t.max() >= num_classes):
        bad = t[(t < 0) | (t >= num_classes)][0]
        raise ValueError(f"target: class id {bad} outside 0..{num_classes - 1} (ignore_index {ignore_index})")
    p = np.where((p >= 0) & (p < num_classes), p, num_classes)
    cm = np.bincount(t * (num_classes + 1) + p, minlength=num_classes * (num_classes + 1))
    return cm.reshape(num_classes, num_classes + 1)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """TP / (TP + FP + FN) per class from a confusion matrix; nan for a class absent from both the gt
    and the prediction (union 0), which mIoU then leaves out."""
    n = cm.shape[0]
    tp = np.diag(cm[:, :n]).astype(np.float64)
    union = cm.sum(axis=1) + cm[:, :n].sum(axis=0) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def _seg_summary(cm: np.ndarray) -> dict[str, float]:
    total = int(cm.sum())
    iou = iou_per_class(cm)
    return {"miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else np.nan,
            "pixel_acc": float(np.trace(cm[:, :cm.shape[0]]) / total) if total else np.nan, "count": total}


def segmentation_metrics(pred, target, num_classes: int, ignore_index: int | None = 255) -> dict[str, float]:
    """miou, pixel_acc and ``count`` (scored pixels) of one class-id map."""
    return _seg_summary(confusion_matrix(pred, target, num_classes, ignore_index))


class SegmentationMetrics:
    """mIoU of a split from one confusion matrix summed over all images (the PASCAL VOC / ADE20K /
    Cityscapes definition): per-image mIoU would overweight classes that appear in few pixels of one
    image. ``count``: scored pixels; ``per_class_iou()`` for the table by class."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255):
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive integer, got {num_classes!r}")
        self.num_classes, self.ignore_index = int(num_classes), ignore_index
        self.confusion = np.zeros((self.num_classes, self.num_classes + 1), np.int64)
        self.images = 0

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    def update(self, pred, target) -> None:
        self.confusion += confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self.images += 1

    def per_class_iou(self) -> np.ndarray:
        return iou_per_class(self.confusion)

    def compute(self) -> dict[str, float]:
        return _seg_summary(self.confusion)
