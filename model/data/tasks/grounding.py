"""Grounding (RefCOCO-style): a referring expression -> the image with the referred box outlined.

Sources: COCO ``instances.json`` + refs (format coco), or a JSON/JSONL/Parquet re-export with an image,
a box and the expression(s). ``box_format`` (xywh as COCO, or xyxy) and ``box_units`` (pixels,
normalized 0..1, normalized1000) name the convention; boxes are mapped through the image's square fit.
One expression per sample, chosen by the sample's RNG when a record holds several.
"""
from __future__ import annotations

from unigen.model.data import fields as F
from unigen.model.data.errors import DataError
from unigen.model.data.render import grounding as ground_r
from unigen.model.data.render.geometry import box_to_xyxy
from unigen.model.data.tasks.base import TaskAdapter, assistant, image, image_gen, require, text, user


class Grounding(TaskAdapter):
    task = "grounding"
    default_fields = {"image": "image;jpg;png;file_name", "box": "bbox;box",
                      "text": "sentences;refs;expressions;expression;sentence;answer;text"}
    default_options = {"box_format": "xywh", "box_units": "pixels"}
    templates = ('Locate "{text}" in the image and draw a box around it.',
                 "Draw a box around {text}.", 'Where is "{text}"? Mark it with a box.')

    def validate_options(self, where):
        if self.options["box_format"] not in ("xywh", "xyxy"):
            raise DataError(f"{where}.options.box_format: {self.options['box_format']!r}; valid: xywh, xyxy")
        if self.options["box_units"] not in ("pixels", "normalized", "normalized1000"):
            raise DataError(f"{where}.options.box_units: {self.options['box_units']!r}; valid: pixels, "
                            "normalized, normalized1000")

    def convert(self, record, ctx):
        rgb = self.image(record, "image", ctx)
        box = F.as_number_list(F.lookup(record, self.fields["box"]), "box", 4)
        xyxy = box_to_xyxy(box, self.options["box_format"], self.options["box_units"], rgb.width, rgb.height)
        require(xyxy[2] > xyxy[0] and xyxy[3] > xyxy[1], f"degenerate box {box}")
        expressions = F.as_text_list(F.lookup(record, self.fields["text"]), "expression")
        expression = expressions[ctx.rng.randrange(len(expressions))]
        inp, fit = self.fit(rgb)
        target_box = fit.box_xyxy(xyxy)
        require(target_box is not None, f"box {box} falls outside the centre crop")
        target = ground_r.draw_box(inp, target_box)
        return [user(image(inp), text(self.instruction(ctx, text=expression))), assistant(image_gen(target))]
