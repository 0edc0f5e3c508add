"""Generated target images -> the predictions the metrics take, by the inverse of the task's own rendering.

Each decoder is a thin wrapper over ``unigen.model.data.render`` and takes the same options as the task
adapter that rendered the training targets (``tasks/dense.py``: depth_range, encoding, label_set /
num_classes; ``tasks/pose.py``; ``tasks/grounding.py``), so a prediction is read with exactly the
inverse of what the model learnt to draw. What the wrappers add is robustness to what a generator
produces (colours that are never exact, noise, mild blur):

| task         | returns                              | robustness added here                            |
|--------------|--------------------------------------|--------------------------------------------------|
| depth        | HxW metres                           | black reads as the far end, not "no measurement" |
| normal       | HxWx3 unit vectors (0 = invalid)     | none needed: renormalised, black = invalid       |
| segmentation | HxW class ids                        | nearest palette entry in row blocks; mode filter |
| pose         | 17 lists of (x, y) candidates        | colour tolerance ``tol`` is a parameter          |
| grounding    | xyxy box or None                     | colour tolerance ``tol`` is a parameter          |
"""
from __future__ import annotations

import inspect

import numpy as np

from unigen.model.data.render import depth as depth_r
from unigen.model.data.render import grounding as ground_r
from unigen.model.data.render import normal as normal_r
from unigen.model.data.render import pose as pose_r
from unigen.model.data.render import segmentation as seg_r

_SEG_BLOCK = 8192  # pixels decoded at once: the nearest-colour search holds pixels x palette x 3 int64


def as_rgb(image) -> np.ndarray:
    """A PIL image or an HxW / HxWx3 / HxWx4 array -> HxWx3 uint8 (alpha dropped, gray replicated)."""
    if hasattr(image, "convert"):  # PIL: any mode, as the generator's pipeline hands it over
        image = image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"image: expected a PIL image or an HxWx3 array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.number) or np.nanmin(arr) < 0 or np.nanmax(arr) > 255:
            raise ValueError(f"image: expected uint8 values 0..255, got dtype {arr.dtype}")
        arr = np.rint(np.nan_to_num(arr)).astype(np.uint8)
    return arr[..., :3]


def decode_depth(image, depth_range=depth_r.DEFAULT_RANGE, encoding: str = "log",
                 keep_invalid: bool = False) -> np.ndarray:
    """Metres from a depth target (the adapter's ``depth_range`` and ``encoding``).

    The encoding reserves black for "no measurement"; a model asked for depth everywhere that draws a
    (near-)black pixel means "as far as it goes", so by default black decodes to d_max rather than to
    an invalid 0 that the metric would clip to the nearest depth. ``keep_invalid=True`` keeps the
    encoding's meaning (0 = invalid), for reading back ground-truth renders.
    """
    d_range = _depth_range(depth_range)
    rgb = as_rgb(image)
    if not keep_invalid:
        rgb = np.maximum(rgb, 1)  # gray level 1 is the far end of the range
    return depth_r.decode(rgb, d_range, encoding)


def _depth_range(depth_range) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in depth_range)
    except (TypeError, ValueError):
        raise ValueError(f"depth_range: expected [d_min, d_max] metres, got {depth_range!r}") from None
    if not 0 < lo < hi:
        raise ValueError(f"depth_range: expected 0 < d_min < d_max, got {depth_range!r}")
    return lo, hi


def decode_normal(image) -> np.ndarray:
    """Unit normals (OpenGL camera frame) from a normal target; zero where the image is black-ish
    (invalid), which the metric scores as a 90-degree error."""
    return normal_r.decode(as_rgb(image))


def segmentation_classes(label_set: str = "ade20k-150", num_classes: int | None = None) -> int:
    """The number of classes the adapter used: ``num_classes`` when set (a custom label set), else the
    size of the named label set."""
    if num_classes is not None:
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive integer, got {num_classes!r}")
        return int(num_classes)
    if label_set not in seg_r.LABEL_SETS:
        raise ValueError(f"label_set {label_set!r} is not known ({', '.join(sorted(seg_r.LABEL_SETS))}); "
                         "pass num_classes for a custom label set")
    return seg_r.LABEL_SETS[label_set]


def decode_segmentation(image, label_set: str = "ade20k-150", num_classes: int | None = None,
                        mode_filter: int = 0) -> np.ndarray:
    """Class ids from a segmentation target: each pixel's nearest palette colour among the label set's
    classes (plus 255 "ignore", which the metric counts as wrong). Decoded in blocks of rows because a
    generated image has no exact palette colour, and the render module's nearest-colour search over a
    whole 512 x 512 image at once would need about 1 GB for ADE20K's 151 colours.

    ``mode_filter``: size of a majority filter over the decoded ids (3 removes isolated pixels that
    noise pushed to another palette entry; VOC colours of 150 classes are only 32 apart in one
    channel). 0 keeps the exact inverse. Needs ids below 256, i.e. num_classes <= 256.
    """
    n = segmentation_classes(label_set, num_classes)
    if mode_filter and (not isinstance(mode_filter, int) or mode_filter < 3 or mode_filter % 2 == 0 or n > 256):
        raise ValueError(f"mode_filter: expected 0 or an odd size >= 3 with at most 256 classes, got "
                         f"{mode_filter!r} with {n} classes")
    rgb = as_rgb(image)
    rows = max(1, _SEG_BLOCK // rgb.shape[1])
    ids = np.concatenate([seg_r.decode(rgb[y:y + rows], n) for y in range(0, rgb.shape[0], rows)])
    if mode_filter:
        from PIL import Image, ImageFilter
        ids = np.asarray(Image.fromarray(ids.astype(np.uint8), "L").filter(ImageFilter.ModeFilter(mode_filter)))
    return ids.astype(np.int64)


def decode_pose(image, tol: int = 20) -> list[list[tuple[float, float]]]:
    """For each of the 17 COCO keypoint types, the centres of every blob of its joint colour (the input
    of ``metrics.pck``). ``tol``: per-channel colour tolerance; joint colours are >= 45 apart, so up to
    about 22 stays unambiguous. Spurious blobs add candidates, which PCK's one-to-one matching ignores."""
    if not 0 <= tol < 128:
        raise ValueError(f"tol: expected a per-channel colour tolerance in 0..127, got {tol}")
    return pose_r.decode(as_rgb(image), tol)


def decode_box(image, tol: int = 40) -> list[int] | None:
    """The magenta-outlined box (xyxy, exclusive end) in a grounding target, or None if there is none
    (which the grounding metric counts as wrong). ``tol``: per-channel colour tolerance."""
    if not 0 <= tol < 128:
        raise ValueError(f"tol: expected a per-channel colour tolerance in 0..127, got {tol}")
    return ground_r.find_box(as_rgb(image), tol)


DECODERS = {"depth": decode_depth, "normal": decode_normal, "segmentation": decode_segmentation,
            "pose": decode_pose, "grounding": decode_box}
# Adapter options about reading the source, not about the rendering: a source's whole options block can
# be passed to ``decode`` as it is.
SOURCE_OPTIONS = {"depth": {"depth_format", "png_scale"}, "normal": {"convention"},
                  "segmentation": {"ignore_index"}, "grounding": {"box_format", "box_units"}}


def decode(task: str, image, **options):
    """The prediction for ``task`` (a task adapter's name) given that source's adapter options, e.g.
    ``decode("depth", img, depth_range=[0.1, 10], encoding="linear", depth_format="png16")``."""
    if task not in DECODERS:
        raise ValueError(f"task {task!r}: no decoder; valid: {', '.join(DECODERS)}")
    fn = DECODERS[task]
    valid = [p for p in inspect.signature(fn).parameters if p != "image"]
    unknown = sorted(set(options) - set(valid) - SOURCE_OPTIONS.get(task, set()))
    if unknown:
        raise ValueError(f"options {unknown} do not apply to {task}; valid: {', '.join(valid) or 'none'}")
    return fn(image, **{k: v for k, v in options.items() if k in valid})
