"""What every task adapter shares: field mapping and option validation, the per-sample context, and
the small builders for messages."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

from unigen.model.data import fields as F
from unigen.model.data.errors import BadRecord, DataError
from unigen.model.data.render.geometry import SquareFit

# Options any source may carry, whatever its task (read by the readers and the loader).
GENERIC_OPTIONS = {
    "image_root": "folder relative image paths resolve against (default: the index file's folder)",
    "storage_options": "fsspec options for this source's filesystem (endpoint, anon, ...); keep "
                       "secrets in the environment, not in recipes",
    "latents": "folder written by `unigen data encode` for this source: precomputed DC-AE latents",
    "templates": "list of instruction templates replacing the task's defaults",
    "refs": "coco format, grounding: the RefCOCO refs file (JSON, or .p with allow_pickle)",
    "split": "coco format, grounding: keep only refs of this split (train, val, testA, ...)",
    "allow_pickle": "coco format, grounding: allow reading a refs(unc).p pickle (runs code; trust it)",
    "size": "synthetic format: number of records",
    "seed": "synthetic format: seed of the generated scenes",
    "group": "true/false: force grouping rows into sessions on or off (default: when the session "
             "field exists)",
    "join": "{uri, format: parquet|jsonl, key}: merge each row with the row of that table having the same "
            "`key` value (OmniEdit-GoT's reasoning + OmniEdit's images)",
}

Conversation = list[dict]


@dataclass
class SampleContext:
    """What an adapter may use besides the record: a deterministic RNG for this sample (from the seed
    and global sample index), the target size, and a reader for paths relative to the source."""
    key: str
    rng: random.Random
    image_size: int
    resolve: Callable[[str], bytes] | None = None


class TaskAdapter:
    task = ""
    default_fields: dict[str, str] = {}
    default_options: dict[str, Any] = {}
    templates: tuple[str, ...] = ()
    session_fields: tuple[str, str] | None = None  # canonical (session, turn) if sessions apply

    def __init__(self, source, image_size: int, where: str = "data.sources[]"):
        self.source = source
        self.image_size = image_size
        unknown = sorted(set(source.fields) - set(self.default_fields))
        if unknown:
            raise DataError(f"{where}.fields: unknown field(s) {unknown} for task {self.task}; valid: "
                            f"{sorted(self.default_fields)}")
        valid = set(self.default_options) | set(GENERIC_OPTIONS)
        bad = sorted(set(source.options) - valid)
        if bad:
            raise DataError(f"{where}.options: unknown option(s) {bad} for task {self.task}; valid: "
                            f"{sorted(valid)}")
        self.fields = {**self.default_fields, **source.fields}
        self.options = {**self.default_options, **source.options}
        if source.options.get("join") is not None:
            from unigen.model.data.readers.join import check_join
            check_join(source.options["join"], where)
        tpl = self.options.get("templates")
        if tpl is not None and (not isinstance(tpl, list) or not tpl or not all(isinstance(t, str) for t in tpl)):
            raise DataError(f"{where}.options.templates: expected a non-empty list of strings")
        self.validate_options(where)

    def validate_options(self, where: str) -> None:
        """Subclasses check their own option values (raise DataError naming ``where.options.x``)."""

    def grouping(self) -> tuple[str, str] | None:
        """Source columns (session, turn) to group rows by, or None."""
        if not self.session_fields or self.options.get("group") is False:
            return None
        return self.fields[self.session_fields[0]], self.fields[self.session_fields[1]]

    def convert(self, record: dict, ctx: SampleContext) -> Conversation:
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------------------
    def instruction(self, ctx: SampleContext, **values) -> str:
        templates = self.options.get("templates") or self.templates
        return templates[ctx.rng.randrange(len(templates))].format(**values)

    def image(self, record: dict, field: str, ctx: SampleContext):
        return F.decode_image(F.lookup(record, self.fields[field]), field, ctx.resolve)

    def fit(self, img) -> tuple[Any, SquareFit]:
        fit = SquareFit(img.width, img.height, self.image_size)
        return fit.image(img), fit


def user(*items) -> dict:
    return {"role": "user", "content": list(items)}


def assistant(*items) -> dict:
    return {"role": "assistant", "content": list(items)}


def text(value: str) -> dict:
    return {"type": "text", "text": value}


def image(img) -> dict:
    return {"type": "image", "image": img}


def image_gen(img) -> dict:
    return {"type": "image_gen", "image": img}


def require(cond: bool, reason: str) -> None:
    if not cond:
        raise BadRecord(reason)
