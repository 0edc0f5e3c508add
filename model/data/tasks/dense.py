"""Dense prediction as image generation: depth, surface normals, semantic segmentation.

Each sample: user [image rgb, text instruction from the task's templates], assistant [image_gen the
target rendered with the fixed encoding of ``unigen.model.data.render`` (see there for encodings and
inverses)]. The RGB image and the value map go through the same square fit (values resampled nearest),
so the target is pixel-aligned with the input at ``image_size``.
"""
from __future__ import annotations

import numpy as np

from unigen.model.data import fields as F
from unigen.model.data.fields import open_image
from unigen.model.data.errors import BadRecord, DataError
from unigen.model.data.render import depth as depth_r
from unigen.model.data.render import normal as normal_r
from unigen.model.data.render import segmentation as seg_r
from unigen.model.data.render.geometry import SquareFit
from unigen.model.data.tasks.base import TaskAdapter, assistant, image, image_gen, text, user


def file_label(value, field: str) -> str:
    """How a target file is named in a bad-record message: its path when the record gives one."""
    if isinstance(value, dict) and isinstance(value.get("path"), str) and value["path"]:
        return value["path"]
    if isinstance(value, str) and value:
        return value
    return f"{field} (inline bytes)"


class _Dense(TaskAdapter):
    target_field = ""

    def convert(self, record, ctx):
        rgb = self.image(record, "image", ctx)
        value = F.lookup(record, self.fields[self.target_field])
        raw = F.raw_bytes(value, self.target_field, ctx.resolve)
        values = self.values(raw, file_label(value, self.target_field))
        if abs(values.shape[1] / values.shape[0] - rgb.width / rgb.height) > 0.02:
            raise BadRecord(f"{self.target_field} map {values.shape[1]}x{values.shape[0]} does not match "
                            f"the image's aspect {rgb.width}x{rgb.height}")
        fitted = SquareFit(values.shape[1], values.shape[0], self.image_size).array(values)
        from PIL import Image
        target = Image.fromarray(self.render(fitted), "RGB")
        inp, _ = self.fit(rgb)
        return [user(image(inp), text(self.instruction(ctx))), assistant(image_gen(target))]

    def values(self, raw: bytes, name: str) -> np.ndarray:
        """The value map of one target file; ``name`` (its path, or the field) heads BadRecord messages."""
        raise NotImplementedError

    def render(self, values: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Depth(_Dense):
    """Depth in metres from float .npy / float images (NYUv2), KITTI uint16 PNG (value / 256, 0 = no
    measurement), Virtual KITTI 2 (png_scale 0.01), Sintel .dpt; rendered log-gray over depth_range."""
    task = "depth"
    target_field = "depth"
    default_fields = {"image": "image;rgb;jpg;png", "depth": "depth;depth_map;depth_path;npy;dpt"}
    default_options = {"depth_format": "auto", "png_scale": 1 / 256, "depth_range": list(depth_r.DEFAULT_RANGE),
                       "encoding": "log"}
    templates = ("Estimate the depth map of this image.", "Generate the depth map for this picture.",
                 "Predict how far away every pixel of this image is, as a depth map.")

    def validate_options(self, where):
        o = self.options
        if o["depth_format"] not in ("auto", "npy", "dpt", "png16", "float"):
            raise DataError(f"{where}.options.depth_format: {o['depth_format']!r}; valid: auto, npy, dpt, png16, float")
        r = o["depth_range"]
        if not (isinstance(r, (list, tuple)) and len(r) == 2 and 0 < float(r[0]) < float(r[1])):
            raise DataError(f"{where}.options.depth_range: expected [d_min, d_max] metres with 0 < d_min < d_max")
        if o["encoding"] not in ("log", "linear"):
            raise DataError(f"{where}.options.encoding: {o['encoding']!r}; valid: log, linear")

    def values(self, raw, name):
        return depth_r.read_depth(raw, self.options["depth_format"], float(self.options["png_scale"]), name=name)

    def render(self, values):
        return depth_r.encode(values, tuple(map(float, self.options["depth_range"])), self.options["encoding"])


class Normal(_Dense):
    """Surface normals from RGB PNGs (n = rgb/255*2-1) or float .npy (HxWx3). ``convention`` names the
    source frame (see ``unigen.model.data.render.normal``): ``opengl`` (x right, y up, z toward the
    viewer, normals toward the camera; our rendering), ``opencv`` (x right, y down, z forward, normals
    toward the camera), ``opencv_away`` / ``dsine`` (OpenCV axes, normals pointing away from the camera:
    DSINE's packaging of the GeoNet NYUv2 and FrameNet ScanNet ground truth). ``flip``: axes to negate
    on top of it (a list of x, y, z), for any other packaging."""
    task = "normal"
    target_field = "normal"
    default_fields = {"image": "image;rgb;jpg;png", "normal": "normal;normal_map;normals;npy"}
    default_options = {"convention": "opengl", "flip": []}
    templates = ("Estimate the surface normals of this image.", "Generate the surface normal map of this scene.",
                 "Predict the orientation of every surface in this picture as a normal map.")

    def validate_options(self, where):
        conv = self.options["convention"]
        if not isinstance(conv, str) or conv not in normal_r.convention_names():
            raise DataError(f"{where}.options.convention: {conv!r}; valid: {normal_r.convention_names()}")
        flip = self.options["flip"]
        if flip is None:
            flip = []
        if (not isinstance(flip, list) or not all(isinstance(a, str) and a in normal_r.AXES for a in flip)
                or len(set(flip)) != len(flip)):
            raise DataError(f"{where}.options.flip: {flip!r}; expected a list of the axes to negate, each of "
                            f"x, y, z at most once (e.g. [x] or [y, z]); valid axes: {list(normal_r.AXES)}")
        self.options["flip"] = flip

    def values(self, raw, name):
        if raw[:6] == b"\x93NUMPY":
            arr = depth_r.read_npy(raw, name, "an HxWx3 float array of normals")
            if arr.ndim != 3 or arr.shape[-1] != 3:
                raise BadRecord(f"{name}: normal .npy expects an HxWx3 array, found shape {arr.shape}")
        else:
            img = open_image(raw, f"{name}: normal image")
            if img.mode not in ("RGB", "RGBA", "P"):
                raise BadRecord(f"{name}: a normal PNG expects 8-bit RGB (n = rgb/255*2-1), found mode "
                                f"{img.mode}; write the normals as RGB or as an HxWx3 float .npy")
            arr = normal_r.from_png(np.asarray(img.convert("RGB")))
        return normal_r.to_frame(arr, self.options["convention"], self.options["flip"])

    def render(self, values):
        return normal_r.encode(values)


class Segmentation(_Dense):
    """Class-id PNGs (uint8/uint16, or palette PNGs whose indices are the ids) for a named label set,
    rendered with the VOC colour map. Ids >= num_classes other than ``ignore_index`` are bad records."""
    task = "segmentation"
    target_field = "label"
    default_fields = {"image": "image;rgb;jpg;png", "label": "label;segmentation;annotation;mask;seg"}
    default_options = {"label_set": "ade20k-150", "num_classes": None, "ignore_index": 255}
    templates = ("Segment this image into semantic classes.", "Generate the semantic segmentation map of this image.",
                 "Label every pixel of this picture with its class, as a segmentation map.")

    def validate_options(self, where):
        ls = self.options["label_set"]
        if self.options["num_classes"] is None:
            if ls not in seg_r.LABEL_SETS:
                raise DataError(f"{where}.options.label_set: {ls!r} is not known ({sorted(seg_r.LABEL_SETS)}); "
                                "set options.num_classes for a custom label set")
            self.options["num_classes"] = seg_r.LABEL_SETS[ls]

    def values(self, raw, name):
        img = open_image(raw, f"{name}: label image")
        ids = np.asarray(img)
        if ids.ndim != 2:
            raise BadRecord(f"{name}: label image: expected one channel of class ids, got mode {img.mode}")
        n, ignore = int(self.options["num_classes"]), self.options["ignore_index"]
        bad = (ids >= n) & (ids != ignore) if ignore is not None else ids >= n
        if bad.any():
            raise BadRecord(f"{name}: label image: class id {int(ids[bad].max())} outside 0..{n - 1} "
                            f"(label_set {self.options['label_set']})")
        return ids.astype(np.int64)

    def render(self, values):
        return seg_r.encode(values)
