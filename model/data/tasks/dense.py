"""Dense prediction as image generation: depth, surface normals, semantic segmentation.

Each sample: user [image rgb, text instruction from the task's templates], assistant [image_gen the
target rendered with the fixed encoding of ``unigen.model.data.render`` (see there for encodings and
inverses)]. The RGB image and the value map go through the same square fit (values resampled nearest),
so the target is pixel-aligned with the input at ``image_size``.
"""
from __future__ import annotations

import io

import numpy as np

from unigen.model.data import fields as F
from unigen.model.data.fields import open_image
from unigen.model.data.errors import BadRecord, DataError
from unigen.model.data.render import depth as depth_r
from unigen.model.data.render import normal as normal_r
from unigen.model.data.render import segmentation as seg_r
from unigen.model.data.render.geometry import SquareFit
from unigen.model.data.tasks.base import TaskAdapter, assistant, image, image_gen, text, user


class _Dense(TaskAdapter):
    target_field = ""

    def convert(self, record, ctx):
        rgb = self.image(record, "image", ctx)
        raw = F.raw_bytes(F.lookup(record, self.fields[self.target_field]), self.target_field, ctx.resolve)
        values = self.values(raw)
        if abs(values.shape[1] / values.shape[0] - rgb.width / rgb.height) > 0.02:
            raise BadRecord(f"{self.target_field} map {values.shape[1]}x{values.shape[0]} does not match "
                            f"the image's aspect {rgb.width}x{rgb.height}")
        fitted = SquareFit(values.shape[1], values.shape[0], self.image_size).array(values)
        from PIL import Image
        target = Image.fromarray(self.render(fitted), "RGB")
        inp, _ = self.fit(rgb)
        return [user(image(inp), text(self.instruction(ctx))), assistant(image_gen(target))]

    def values(self, raw: bytes) -> np.ndarray:
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

    def values(self, raw):
        return depth_r.read_depth(raw, self.options["depth_format"], float(self.options["png_scale"]))

    def render(self, values):
        return depth_r.encode(values, tuple(map(float, self.options["depth_range"])), self.options["encoding"])


class Normal(_Dense):
    """Surface normals from RGB PNGs (n = rgb/255*2-1) or float .npy (HxWx3); ``convention`` names the
    source frame (opengl: x right, y up, z toward the viewer; opencv: x right, y down, z forward)."""
    task = "normal"
    target_field = "normal"
    default_fields = {"image": "image;rgb;jpg;png", "normal": "normal;normal_map;normals;npy"}
    default_options = {"convention": "opengl"}
    templates = ("Estimate the surface normals of this image.", "Generate the surface normal map of this scene.",
                 "Predict the orientation of every surface in this picture as a normal map.")

    def validate_options(self, where):
        if self.options["convention"] not in normal_r.CONVENTIONS:
            raise DataError(f"{where}.options.convention: {self.options['convention']!r}; valid: "
                            f"{sorted(normal_r.CONVENTIONS)}")

    def values(self, raw):
        if raw[:6] == b"\x93NUMPY":
            arr = np.load(io.BytesIO(raw), allow_pickle=False).astype(np.float32)
        else:
            img = open_image(raw, "normal image")
            arr = normal_r.from_png(np.asarray(img.convert("RGB")))
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise BadRecord(f"normal map: expected HxWx3, got shape {arr.shape}")
        return normal_r.to_frame(arr, self.options["convention"])

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

    def values(self, raw):
        img = open_image(raw, "label image")
        ids = np.asarray(img)
        if ids.ndim != 2:
            raise BadRecord(f"label image: expected one channel of class ids, got mode {img.mode}")
        n, ignore = int(self.options["num_classes"]), self.options["ignore_index"]
        bad = (ids >= n) & (ids != ignore) if ignore is not None else ids >= n
        if bad.any():
            raise BadRecord(f"label image: class id {int(ids[bad].max())} outside 0..{n - 1} "
                            f"(label_set {self.options['label_set']})")
        return ids.astype(np.int64)

    def render(self, values):
        return seg_r.encode(values)
