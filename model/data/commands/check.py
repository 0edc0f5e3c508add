"""``unigen data check``: open a source (building its index), read records spread over it, convert
them with the task adapter, and report schema, counts and bad records."""
from __future__ import annotations

import random
import sys

from unigen.model.data.errors import BadRecord
from unigen.model.data.permute import hash_ints
from unigen.model.data.tasks.base import SampleContext
from unigen.model.data.worker import RECORD_ERRORS


def spread(n: int, limit: int) -> list[int]:
    """``limit`` indices spread evenly over range(n) (all of them when limit is 0 or >= n)."""
    if limit <= 0 or limit >= n:
        return list(range(n))
    return sorted({int(k * n / limit) for k in range(limit)})


def convert(src, index: int, seed: int = 0):
    """(conversation, key, raw fields, error reason) for record ``index`` of an open source."""
    key = src.reader.key(index)
    try:
        raw = src.reader.read(index)
        resolve = raw.pop("__resolve__", None)
        fields = sorted(k for k in raw if not k.startswith("__"))
        ctx = SampleContext(key, random.Random(hash_ints(seed, index)), src.adapter.image_size, resolve)
        return src.adapter.convert(raw, ctx), key, fields, None
    except RECORD_ERRORS as exc:
        reason = exc.reason if isinstance(exc, BadRecord) else f"{type(exc).__name__}: {exc}"
        return None, key, None, reason


def describe(conversation) -> list[str]:
    lines = []
    for msg in conversation:
        parts = []
        for item in msg["content"]:
            if item["type"] == "text":
                parts.append(repr(item["text"][:80]))
            else:
                img = item.get("image")
                size = f" {img.width}x{img.height}" if hasattr(img, "width") else ""
                parts.append(f"[{item['type']}{size}]")
        lines.append(f"    {msg['role']}: {' '.join(parts)}")
    return lines


def run(args) -> int:
    from unigen.model.data.cli import source_from_args
    from unigen.model.data.sources import open_source
    spec = source_from_args(args)
    src = open_source(spec, args.image_size, cache_dir=args.index_cache, where="source")
    n = len(src)
    unit = "sessions" if getattr(src.reader, "grouped", False) else "records"
    print(f"source {src.name}: format {spec.format}, task {spec.task}, {n} {unit} in "
          f"{len(src.reader.files) or 'no'} file(s)")
    indices = spread(n, args.limit)
    bad, first, fields = [], None, None
    for i in indices:
        conv, key, raw_fields, reason = convert(src, i)
        if reason is not None:
            bad.append((key, reason))
        elif first is None:
            first, fields = conv, raw_fields
    ok = len(indices) - len(bad)
    fraction = len(bad) / max(1, len(indices))
    print(f"checked {len(indices)} {unit}: {ok} ok, {len(bad)} bad ({fraction:.1%})")
    if fields is not None:
        print(f"fields of the first good record: {', '.join(fields)}")
    for key, reason in bad[:20]:
        print(f"  bad {key}: {reason}")
    if len(bad) > 20:
        print(f"  ... and {len(bad) - 20} more")
    if first is not None:
        print("first conversation:")
        print("\n".join(describe(first)))
    if fraction > args.max_bad_fraction or first is None:
        print(f"FAIL: bad fraction {fraction:.1%} is over --max-bad-fraction {args.max_bad_fraction:.1%}",
              file=sys.stderr)
        return 1
    print("OK")
    return 0
