"""Reading canonical fields out of raw records, and decoding the values they hold.

A raw record is a flat dict: a Parquet row (column -> value), a JSONL object, or a WebDataset sample
(extension -> bytes, e.g. ``{"jpg": b"...", "txt": b"...", "json": b"{...}"}``). Adapters ask for
canonical names ("image", "caption"); the source's ``fields`` mapping (recipe) or the adapter's
defaults say where each lives, with two small conveniences:
- ``"jpg;png;webp"``: the first alternative present wins;
- ``"json.caption"``: a dotted path into a nested dict (a WebDataset ``.json`` member is parsed first).
"""
from __future__ import annotations

import io
import json
from typing import Any

from unigen.model.data.errors import BadRecord

_MISSING = object()


def lookup(record: dict, spec: str) -> Any:
    """The value ``spec`` names in ``record``, or raise BadRecord naming what was looked for."""
    for alt in spec.split(";"):
        value = _dotted(record, alt.strip())
        if value is not _MISSING and value is not None:
            return value
    raise BadRecord(f"missing field {spec!r} (record has {sorted(record)[:12]})")


def lookup_optional(record: dict, spec: str | None, default: Any = None) -> Any:
    if not spec:
        return default
    try:
        return lookup(record, spec)
    except BadRecord:
        return default


def _dotted(record: dict, path: str) -> Any:
    if path in record:
        return record[path]
    head, _, rest = path.partition(".")
    if not rest or head not in record:
        return _MISSING
    value = record[head]
    for part in rest.split("."):
        if isinstance(value, (bytes, str)) and head.endswith("json"):
            try:
                value = json.loads(value)
            except ValueError:
                return _MISSING
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def as_text(value: Any, what: str) -> str:
    """A string field: bytes are UTF-8 decoded, a one-element list is unwrapped; else BadRecord."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRecord(f"{what}: not UTF-8 text ({exc})") from None
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str):
        raise BadRecord(f"{what}: expected text, got {type(value).__name__}")
    value = value.strip()
    if not value:
        raise BadRecord(f"{what}: empty text")
    return value


def as_text_list(value: Any, what: str) -> list[str]:
    """A list of strings (a single string becomes a one-element list)."""
    if isinstance(value, bytes):
        value = as_text(value, what)
    if isinstance(value, str):
        return [as_text(value, what)]
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not value:
        raise BadRecord(f"{what}: expected a non-empty list of text, got {type(value).__name__}")
    return [as_text(v, f"{what}[{i}]") for i, v in enumerate(value)]


def as_number_list(value: Any, what: str, length: int | None = None) -> list[float]:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (bytes, str)):
        try:
            value = json.loads(value)
        except ValueError:
            raise BadRecord(f"{what}: expected a list of numbers, got text") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (int, float)) for v in value):
        raise BadRecord(f"{what}: expected a list of numbers, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise BadRecord(f"{what}: expected {length} numbers, got {len(value)}")
    return [float(v) for v in value]


def decode_image(value: Any, what: str, resolve=None):
    """An RGB PIL image from bytes, a Hugging Face image struct ``{"bytes", "path"}``, a PIL image, or
    a path/URL string (``resolve(path) -> bytes`` reads it relative to the source's image root)."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return value.convert("RGB")
    return open_image(_image_bytes(value, what, resolve), what).convert("RGB")


def open_image(data: bytes, what: str):
    """A PIL image decoded from ``data`` in its own mode (a uint16 depth PNG stays 16-bit, a class-id
    map stays one channel); ``BadRecord`` naming ``what`` when it does not decode."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BadRecord(f"{what}: undecodable image ({type(exc).__name__}: {exc})") from None
    return img


def raw_bytes(value: Any, what: str, resolve=None) -> bytes:
    """Bytes of a binary field given inline, as an image struct, or as a path (for depth/.npy/.dpt)."""
    return _image_bytes(value, what, resolve)


def _image_bytes(value: Any, what: str, resolve) -> bytes:
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        value = value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str) and value:
        if resolve is None:
            raise BadRecord(f"{what}: a path ({value!r}) but this source has no image root")
        try:
            return resolve(value)
        except FileNotFoundError:
            raise BadRecord(f"{what}: file not found: {value}") from None
        except OSError as exc:
            raise BadRecord(f"{what}: {exc}") from None
    raise BadRecord(f"{what}: expected image bytes or a path, got {type(value).__name__}")
