"""``unigen data preview``: a contact sheet PNG, one row per sample: the conversation's images in
order (inputs labelled "in", generation targets "OUT") and its text, wrapped, beside them."""
from __future__ import annotations

import random
import textwrap

from unigen.model.data.commands.check import convert

THUMB = 128
TEXT_W = 300
PAD = 6


def sheet(rows: list[tuple[str, list]], thumb: int = THUMB):
    """rows: (key, conversation) -> PIL image."""
    from PIL import Image, ImageDraw
    font_h = 11
    cells = [_cells(conv) for _, conv in rows]
    max_imgs = max((len(c[0]) for c in cells), default=1)
    width = PAD + max_imgs * (thumb + PAD) + TEXT_W + PAD
    height = PAD + len(rows) * (thumb + font_h * 2 + PAD)
    out = Image.new("RGB", (width, max(height, thumb)), (250, 250, 250))
    draw = ImageDraw.Draw(out)
    y = PAD
    for (key, _), (images, texts) in zip(rows, cells):
        draw.text((PAD, y), key[:80], fill=(90, 90, 90))
        x, top = PAD, y + font_h + 2
        for label, img in images:
            out.paste(img.convert("RGB").resize((thumb, thumb)), (x, top))
            colour = (200, 0, 120) if label == "OUT" else (40, 40, 40)
            draw.rectangle([x, top, x + thumb - 1, top + thumb - 1], outline=colour, width=2 if label == "OUT" else 1)
            draw.text((x + 3, top + 2), label, fill=colour)
            x += thumb + PAD
        tx = PAD + max_imgs * (thumb + PAD)
        lines = [ln for t in texts for ln in textwrap.wrap(t, 48)][: thumb // font_h]
        for k, line in enumerate(lines):
            draw.text((tx, top + k * font_h), line, fill=(0, 0, 0))
        y += thumb + font_h * 2 + PAD
    return out


def _cells(conversation):
    images, texts = [], []
    for msg in conversation:
        for item in msg["content"]:
            if item["type"] == "text":
                texts.append(f"{msg['role']}: {item['text']}")
            elif item.get("image") is not None and hasattr(item["image"], "convert"):
                images.append(("OUT" if item["type"] == "image_gen" else "in", item["image"]))
    return images, texts


def run(args) -> int:
    from unigen.model.data.cli import source_from_args
    from unigen.model.data.sources import open_source
    spec = source_from_args(args)
    src = open_source(spec, args.image_size, cache_dir=args.index_cache, where="source")
    order = list(range(len(src)))
    random.Random(args.seed).shuffle(order)
    rows, bad = [], []
    for i in order:
        if len(rows) == args.count:
            break
        conv, key, _, reason = convert(src, i, args.seed)
        (rows.append((key, conv)) if reason is None else bad.append((key, reason)))
    if not rows:
        raise ValueError(f"source {src.name}: no readable record among {len(bad)} tried; run `unigen data check`")
    sheet(rows).save(args.out)
    print(f"wrote {args.out}: {len(rows)} samples of {src.name} ({len(bad)} bad records skipped)")
    for key, reason in bad[:5]:
        print(f"  bad {key}: {reason}")
    return 0
