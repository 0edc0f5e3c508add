"""``unigen data label-segmentation``: OneFormer class-id maps for the images of WebDataset shards.

Output, for each input shard ``<name>.tar`` (``<out>`` is a local or shared filesystem folder):

    <out>/<name>/images/<key>.<ext>   the sample's image bytes, as found in the shard
    <out>/<name>/labels/<key>.png     class ids (8-bit, 16-bit past 256 classes), the image's size
    <out>/<name>.jsonl                one line per image: {"image", "label", "caption"?, "key"},
                                      paths relative to <out>; written last: the shard's done marker

A recipe reads the folder as it is: ``{uri: <out>/*.jsonl, format: jsonl, task: segmentation,
options: {label_set: ade20k-150}}``. One JSONL per shard instead of one merged file: a shard's lines
become visible in one atomic rename, so there is no merge step, no "last worker" to elect, and a run
that is still going (or was killed) is already a valid source of its finished shards.

Resume: a shard whose ``<name>.jsonl`` exists is skipped; any other shard is labelled from its start
(files a killed run left are overwritten). Every file is written to a temp name then renamed. A shard
cut short keeps its complete samples (the cut one is a bad sample), as the webdataset reader does;
one that cannot be opened or read gets no marker and makes the run exit 1.
Split: shard i (in the sorted order of the expanded pattern) belongs to rank ``i % world_size``; rank
and world size come from ``--rank/--world-size`` or the environment (``resolve_rank``), so a SLURM
array, ``srun`` tasks or Ray workers all run the same command.
Exit codes: 0 every assigned shard done, 1 some shard could not be read (the others are done; rerun
to retry it), 2 a usage error.
"""
from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from unigen.model.data import fields as F
from unigen.model.data.errors import BadRecord
from unigen.orchestrator.atomic import atomic_write_bytes, atomic_write_text

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
SETTINGS_FILE = "labeler.txt"  # not .json/.jsonl: the recipe's glob must see only the shards' files

# (rank variable, world-size variable) in the order they are tried; the first pair set wins.
RANK_ENV = (("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"), ("SLURM_PROCID", "SLURM_NTASKS"),
            ("RANK", "WORLD_SIZE"))


def resolve_rank(rank: int | None, world_size: int | None, env) -> tuple[int, int, str]:
    """(rank, world size, where they came from). Flags win; else the first pair of ``RANK_ENV`` that
    is set (a SLURM array's ids are shifted by ``SLURM_ARRAY_TASK_MIN``, so ``--array=1-8`` works);
    else a single worker."""
    where = "--rank/--world-size"
    if rank is None and world_size is None:
        rank, world_size, where = 0, 1, "default (single worker)"
        for rank_var, world_var in RANK_ENV:
            if env.get(rank_var) not in (None, "") and env.get(world_var) not in (None, ""):
                try:
                    rank, world_size = int(env[rank_var]), int(env[world_var])
                    if rank_var == "SLURM_ARRAY_TASK_ID":
                        rank -= int(env.get("SLURM_ARRAY_TASK_MIN") or 0)
                except ValueError:
                    raise ValueError(f"${rank_var}={env[rank_var]!r} / ${world_var}={env[world_var]!r}: "
                                     "expected integers; pass --rank and --world-size") from None
                where = f"${rank_var}/${world_var}"
                break
    elif rank is None or world_size is None:
        raise ValueError("--rank and --world-size go together; pass both (or neither, to read them from "
                         "SLURM_ARRAY_TASK_ID/COUNT, SLURM_PROCID/NTASKS or RANK/WORLD_SIZE)")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} of world size {world_size} (from {where}): expected "
                         "0 <= rank < world size")
    return rank, world_size, where


def plan_shards(pattern: str) -> list[tuple[str, str]]:
    """(name, url) of every ``.tar`` the pattern names, sorted by url; names must be unique (each
    names its output files)."""
    from unigen.model.data import fs
    try:
        urls = sorted(u for u in fs.expand_uri(pattern) if u.lower().endswith(".tar"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"shards {pattern!r}: cannot list them ({exc})") from None
    if not urls:
        raise ValueError(f"shards {pattern!r}: no .tar file matches; pass a shard pattern such as "
                         "laion/{00000..00099}.tar, a glob or a folder")
    seen: dict[str, str] = {}
    for url in urls:
        name = url.rsplit("/", 1)[-1][:-4]
        if name in seen:
            raise ValueError(f"shards {seen[name]} and {url} share the name {name!r}, and the name keys "
                             "the output files; label them into separate --out folders")
        seen[name] = url
    return [(name, url) for name, url in seen.items()]


class ShardReadError(Exception):
    """The shard cannot be read to its end (missing, unreachable, not a tar, cut short)."""


@dataclass
class ShardResult:
    images: int = 0
    bad: list = field(default_factory=list)  # (key, reason)
    failed: str | None = None  # why the shard could not be read; no done marker then


def samples(url: str):
    """(key, {ext: bytes}, None) per sample of a tar shard, read front to back in one pass (8 MiB
    read-ahead, no index). A shard cut short (a failed upload) ends with (key, None, reason) for the
    sample the cut falls in, after its complete samples: the webdataset reader's rule, so training and
    labelling agree on what the shard holds. A shard that cannot be opened or read is a
    ShardReadError; errors of the caller's own work (a full disk) pass through."""
    from unigen.model.data import fs
    from unigen.model.data.readers.webdataset import split_member
    try:
        fsys, path = fs.filesystem(url)
        size = int(fsys.size(path))
        with fsys.open(path, "rb", block_size=8 * 2**20) as fh:
            tar = tarfile.open(fileobj=fh, mode="r:")
            key, members = None, {}
            while True:
                try:
                    member = tar.next()
                except tarfile.ReadError as exc:  # a cut inside a header or padding, past the first
                    if members:
                        yield key, None, f"truncated shard ({exc})"
                    return
                if member is None:
                    break
                tar.members.clear()  # tarfile keeps every member otherwise
                if not member.isfile():
                    continue
                k, ext = split_member(member.name)
                if k != key and members:
                    yield key, members, None
                    members = {}
                key = k
                if member.offset_data + member.size > size:
                    yield key, None, f"truncated shard: {member.name} runs past the end of the file"
                    return
                members[ext] = tar.extractfile(member).read()
            # tarfile stops quietly at a header cut short; a complete archive has only zero blocks there,
            # and the cut header may belong to the last sample, so that one cannot be trusted.
            end = tar.offset
            if end < size:
                fh.seek(end)
                if fh.read(min(size - end, 1024)).strip(b"\0"):
                    if members:
                        yield key, None, f"truncated shard: the file ends inside a member header at byte {end}"
                    return
            if members:
                yield key, members, None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ShardReadError(f"{url}: {type(exc).__name__}: {exc}") from exc


def decode(key: str, members: dict, shard: str):
    """(image ext, image bytes, RGB image, caption or None); BadRecord when the sample cannot be used."""
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise BadRecord(f"key {key!r} is not a safe relative path")
    ext = next((e for e in IMAGE_EXTS if e in members), None)
    if ext is None:
        raise BadRecord(f"no image member ({'/'.join(IMAGE_EXTS)}); the sample has {sorted(members)}")
    # The very decode the segmentation reader applies, so labels align with what training sees.
    img = F.decode_image(members[ext], f"{shard}/{key}.{ext}")
    caption = None
    if "txt" in members:
        caption = members["txt"].decode("utf-8", "replace").strip() or None
    return ext, members[ext], img, caption


def label_png(ids, num_labels: int) -> bytes:
    """One-channel PNG of class ids: 8-bit up to 256 classes, else 16-bit (the reader takes both)."""
    import numpy as np
    from PIL import Image
    img = Image.fromarray(ids.astype(np.uint8)) if num_labels <= 256 else Image.fromarray(ids.astype(np.uint16))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def label_shard(labeler, name: str, url: str, out: Path, batch_size: int, progress=None) -> ShardResult:
    """Label every image of one shard; write its JSONL (the done marker) only when the shard was read
    to its end (a cut shard's end included); ``result.failed`` says why not."""
    result, lines, batch = ShardResult(), [], []

    def flush():
        maps = labeler.label([img for _, _, _, img, _ in batch])
        for (key, ext, raw, img, caption), ids in zip(batch, maps):
            assert ids.shape == (img.height, img.width), (ids.shape, img.size)
            image_rel, label_rel = f"{name}/images/{key}.{ext}", f"{name}/labels/{key}.png"
            for rel, data in ((image_rel, raw), (label_rel, label_png(ids, labeler.num_labels))):
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(out / rel, data)
            line = {"image": image_rel, "label": label_rel, "key": f"{name}/{key}"}
            if caption:
                line["caption"] = caption
            lines.append(json.dumps(line, ensure_ascii=False))
        result.images += len(batch)
        if progress is not None:
            progress.update(len(batch))
        batch.clear()

    try:
        for key, members, cut in samples(url):
            try:
                if cut:
                    raise BadRecord(cut)
                ext, raw, img, caption = decode(key, members, name)
            except BadRecord as exc:
                result.bad.append((f"{name}/{key}", exc.reason))
                continue
            batch.append((key, ext, raw, img, caption))
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    except ShardReadError as exc:
        result.failed = str(exc)
        return result
    atomic_write_text(out / f"{name}.jsonl", "".join(line + "\n" for line in lines), fsync=True)
    return result


def settings(args) -> str:
    return f"model: {args.model}\nlabel_set: {args.label_set}\n"


def check_settings(out: Path, text: str) -> None:
    """Labels of two models must not mix in one folder: the first run that loads its model records
    its settings (``label_all``), later runs (resumes, other ranks) must match them."""
    path = out / SETTINGS_FILE
    if path.exists():
        found = path.read_text(encoding="utf-8")
        if found != text:
            raise ValueError(f"{out} holds labels made with {' '.join(found.split())}, not "
                             f"{' '.join(text.split())}; pass the same --model/--label-set or another --out")


def run(args) -> int:
    from unigen.model.data.render.segmentation import LABEL_SETS

    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: expected at least 1")
    if "://" in args.out and not args.out.startswith("file://"):
        raise ValueError(f"--out {args.out!r}: expected a local or shared filesystem folder (renames make "
                         "the writes atomic); copy the finished folder to object storage afterwards")
    if args.label_set not in LABEL_SETS:
        raise ValueError(f"--label-set {args.label_set!r} is not known; valid: {', '.join(sorted(LABEL_SETS))}")
    rank, world, where = resolve_rank(args.rank, args.world_size, os.environ)
    shards = plan_shards(args.shards)
    mine = shards[rank::world]
    out = Path(args.out.removeprefix("file://"))
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out, settings(args))
    todo = [(n, u) for n, u in mine if not (out / f"{n}.jsonl").exists()]
    print(f"rank {rank}/{world} ({where}): {len(mine)} of {len(shards)} shards, {len(mine) - len(todo)} "
          f"already done, {len(todo)} to label", file=sys.stderr)
    images, bad, failed, start, busy = 0, [], [], time.time(), 0.0
    if todo:
        images, bad, failed, busy = label_all(args, todo, out, LABEL_SETS[args.label_set])
    took = time.time() - start
    print(f"labelled {images} images in {len(todo) - len(failed)} shards into {out} in {took:.1f}s "
          f"({images / max(busy, 1e-9):.1f} images/s after loading the model); rank {rank}/{world}: "
          f"{len(mine) - len(todo)} shards skipped as done, {len(bad)} bad samples skipped, "
          f"{len(failed)} shards failed")
    for key, reason in bad[:10]:
        print(f"  bad {key}: {reason}", file=sys.stderr)
    for name, reason in failed:
        print(f"  failed shard {name}: {reason} (no done marker; rerun to retry it)", file=sys.stderr)
    print(f"use it: {{uri: {out}/*.jsonl, format: jsonl, task: segmentation, "
          f"options: {{label_set: {args.label_set}}}}}")
    return 1 if failed else 0


def label_all(args, todo, out: Path, num_classes: int) -> tuple[int, list, list, float]:
    """Load the model once and label the shards of ``todo``: (images, bad samples, failed shards,
    seconds spent labelling)."""
    from unigen.model.data.commands.oneformer_labeler import OneFormerLabeler
    labeler = OneFormerLabeler(args.model, device=args.device, dtype=args.dtype)
    if labeler.num_labels > num_classes:
        raise ValueError(f"--model {args.model} predicts {labeler.num_labels} classes but --label-set "
                         f"{args.label_set} has {num_classes}; pass the label set the model was trained on")
    if not (out / SETTINGS_FILE).exists():
        atomic_write_text(out / SETTINGS_FILE, settings(args))
    images, bad, failed, start = 0, [], [], time.time()
    with _progress() as bar:
        for name, url in todo:
            if bar is not None:
                bar.set_description(name)
            res = label_shard(labeler, name, url, out, args.batch_size, bar)
            images += res.images
            bad.extend(res.bad)
            if res.failed:
                failed.append((name, res.failed))
    return images, bad, failed, time.time() - start


class _progress:
    """A tqdm bar counting images (quiet in logs: redrawn every 30 s when stderr is not a terminal)."""

    bar = None

    def __enter__(self):
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        tty = sys.stderr.isatty()
        self.bar = tqdm(unit="img", mininterval=0.5 if tty else 30, file=sys.stderr, dynamic_ncols=tty)
        return self.bar

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
