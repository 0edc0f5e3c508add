"""``unigen data ...`` subcommands: synth, check, preview, encode, label-segmentation.

Registered on the ``unigen data`` parser's subparsers by ``add_subcommands``. Imports only argparse and the
standard library at module level (``unigen --help`` builds these parsers); each command imports what
it needs when it runs. Every ``func(args)`` returns an exit code: 0 ok, 1 the data failed the check,
2 a usage or data error (printed as one ``error: ...`` line).
"""
from __future__ import annotations

import argparse
import json
import sys

TASKS = ("t2i", "edit", "interleaved", "multi_image", "depth", "normal", "pose", "segmentation", "grounding")
FORMATS = ("webdataset", "parquet", "jsonl", "coco", "synthetic", "nyu_mat", "nyu_h5")


def add_subcommands(subparsers) -> None:
    """Register ``synth``, ``check``, ``preview``, ``encode`` and ``label-segmentation`` on ``subparsers``:
    the subparsers object of the ``unigen data`` parser (``data_parser.add_subparsers(...)``)."""
    sub = subparsers
    p = sub.add_parser("synth", help="write the synthetic shapes corpus in the published formats")
    p.add_argument("--out", required=True, help="folder to write (one subfolder per task)")
    p.add_argument("--seed", type=int, default=0, help="seed of the scenes (default 0)")
    p.add_argument("--scale", type=int, default=1, help="multiply every record count (default 1: ~300 records)")
    p.set_defaults(func=_run("synth"))

    p = sub.add_parser("check", help="read a source: schema, counts, bad records")
    _source_args(p)
    p.add_argument("--limit", type=int, default=1000, help="records to read, spread over the source (default 1000; "
                   "0 = all)")
    p.add_argument("--max-bad-fraction", type=float, default=0.01, help="fail above this bad fraction (default 0.01)")
    p.set_defaults(func=_run("check"))

    p = sub.add_parser("preview", help="write a contact sheet of samples (inputs, instruction, target)")
    _source_args(p)
    p.add_argument("--out", required=True, help="PNG file to write, e.g. grid.png")
    p.add_argument("--count", type=int, default=8, help="samples (rows) in the sheet (default 8)")
    p.add_argument("--seed", type=int, default=0, help="picks which records are shown (default 0)")
    p.set_defaults(func=_run("preview"))

    p = sub.add_parser("encode", help="precompute DC-AE latents of a source's targets")
    _source_args(p)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--preset", help="model preset whose VAE encodes (e.g. tiny, unigen-3b)")
    who.add_argument("--pretrained", help="folder saved by UniGenPipeline.save_pretrained")
    p.add_argument("--out", required=True, help="folder (or s3:// URL) for the latents; set it as the "
                   "source's options.latents")
    p.add_argument("--batch-size", type=int, default=16, help="images per VAE call (default 16)")
    p.add_argument("--limit", type=int, default=0, help="encode only the first N records (default 0 = all)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu), e.g. cuda")
    p.set_defaults(func=_run("encode"), image_size=None)

    p = sub.add_parser("label-segmentation", help="label the images of WebDataset shards with OneFormer: class-id "
                       "PNGs plus JSONL files a task: segmentation source reads (resumable, split over ranks)")
    p.add_argument("shards", help="WebDataset shards: pattern (laion/{00000..00099}.tar), glob or folder; "
                   "local, s3:// or any fsspec URL")
    p.add_argument("--out", required=True, help="folder to write (local or shared filesystem): <name>.jsonl per "
                   "shard plus <name>/images and <name>/labels; read it as uri <out>/*.jsonl")
    p.add_argument("--model", default="shi-labs/oneformer_ade20k_swin_large",
                   help="OneFormer hub id or local folder, loaded with from_pretrained "
                        "(default shi-labs/oneformer_ade20k_swin_large)")
    p.add_argument("--label-set", default="ade20k-150", help="label set the model predicts; the source's "
                   "options.label_set (default ade20k-150)")
    p.add_argument("--device", default="auto", help="torch device (default auto: cuda when available, else cpu)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="model weights and activations (default float32)")
    p.add_argument("--batch-size", type=int, default=8, help="images per model call (default 8)")
    p.add_argument("--rank", type=int, help="this worker's rank (default: $SLURM_ARRAY_TASK_ID, $SLURM_PROCID "
                   "or $RANK; 0)")
    p.add_argument("--world-size", type=int, help="number of workers (default: $SLURM_ARRAY_TASK_COUNT, "
                   "$SLURM_NTASKS or $WORLD_SIZE; 1)")
    p.set_defaults(func=_run("label_segmentation"))


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="URI of the source: shard pattern, Parquet file/folder, JSONL or COCO JSON")
    p.add_argument("--task", required=True, choices=TASKS, help="task adapter")
    p.add_argument("--format", choices=FORMATS, help="on-disk format (default: from the URI's extension)")
    p.add_argument("--name", help="source name in reports (default: from the URI)")
    p.add_argument("--field", action="append", default=[], metavar="NAME=SPEC",
                   help="field mapping, e.g. caption=json.caption (repeatable)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="adapter option; VALUE is JSON if it parses, else text (repeatable), "
                        "e.g. depth_range=[0.5,80] or image_root=s3://bucket/coco/train2017")
    p.add_argument("--image-size", type=int, default=256, help="target side in pixels (default 256; encode: "
                   "the model's image_size)")
    p.add_argument("--index-cache", help="folder for cached indexes (default $UNIGEN_DATA_CACHE or "
                   "~/.cache/unigen/data-index)")


def _run(name: str):
    def func(args) -> int:
        import importlib
        from unigen.model.data.errors import DataError
        try:
            return importlib.import_module(f"unigen.model.data.commands.{name}").run(args)
        except (DataError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    func.__name__ = f"data_{name}"
    return func


def infer_format(uri: str) -> str:
    low = uri.lower().rstrip("/")
    if low.endswith(".tar") or ".tar}" in low:
        return "webdataset"
    if low.endswith(".parquet"):
        return "parquet"
    if low.endswith(".jsonl"):
        return "jsonl"
    if low.endswith(".json"):
        return "coco"
    if low.endswith(".mat"):
        return "nyu_mat"
    if low.endswith(".h5"):
        return "nyu_h5"
    from unigen.model.data import fs
    try:
        found = {f.rsplit(".", 1)[-1].lower() for f in fs.expand_uri(uri)}
    except OSError:
        found = set()
    for ext, fmt in (("tar", "webdataset"), ("parquet", "parquet"), ("jsonl", "jsonl")):
        if ext in found:
            return fmt
    raise ValueError(f"cannot tell the format of {uri!r} from its name; pass --format ({', '.join(FORMATS)})")


def source_from_args(args):
    """A SourceSpec from the common source arguments (fields/options parsed, format inferred)."""
    from unigen.model.data.spec import SourceSpec
    fields = dict(_pair(f, "--field") for f in args.field)
    options = {k: _value(v) for k, v in (_pair(o, "--option") for o in args.option)}
    return SourceSpec(uri=args.source, format=args.format or infer_format(args.source), task=args.task,
                      name=args.name, fields=fields, options=options)


def _pair(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"{flag} {text!r}: expected KEY=VALUE")
    return key.strip(), value


def _value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text
