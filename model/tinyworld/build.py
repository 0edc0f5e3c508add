"""Building the tiny world's assets: train each part, save it in its hub layout, reload it through
``from_pretrained`` and measure it there (so the figures in BUILD.json are those of the shipped files)."""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from unigen.model.hub import ASSETS_DIR

DEFAULT_OUT = ASSETS_DIR / "tiny-shapes"
PARTS = ("backbone", "vae", "transformer")
BUILD_FILE = "BUILD.json"


def build_backbone(out: Path, args) -> dict:
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from unigen.model.tinyworld import backbone as bb

    settings = bb.BackboneSettings(steps=args.backbone_steps, seed=args.seed)
    model, processor = bb.pretrain(settings, log=_log)
    bb.save(model, processor, out / "backbone")
    reloaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(out / "backbone", dtype=torch.float32).eval()
    return {"settings": vars(settings), "question_accuracy": bb.question_accuracy(reloaded, processor, settings),
            "slot_recall": bb.slot_recall(reloaded, processor, settings)}


def build_vae(out: Path, args) -> dict:
    import torch
    from diffusers import AutoencoderDC

    from unigen.model.tinyworld import vae as ae
    from unigen.model.tinyworld.checks import reconstruction_report

    settings = ae.VaeSettings(steps=args.vae_steps, seed=args.seed)
    _log(f"reading {settings.pictures} pictures from {args.data}")
    pictures = ae.corpus_pictures(args.data, settings)
    model = ae.pretrain(pictures, settings, log=_log)
    ae.save(model, out / "decoder" / "vae")
    reloaded = AutoencoderDC.from_pretrained(out / "decoder" / "vae", torch_dtype=torch.float32).eval()
    return {"settings": vars(settings), "scaling_factor": reloaded.config.scaling_factor,
            **reconstruction_report(reloaded)}


def build_transformer(out: Path, args) -> dict:
    import torch
    from diffusers import SanaTransformer2DModel

    from unigen.model.presets import TINY_SHAPES_DIT

    torch.manual_seed(args.seed)
    model = SanaTransformer2DModel.from_config(TINY_SHAPES_DIT)
    torch.nn.Module.to(model, torch.float16).save_pretrained(out / "decoder" / "transformer")
    return {"seed": args.seed, "parameters": sum(p.numel() for p in model.parameters())}


BUILDERS = {"backbone": build_backbone, "vae": build_vae, "transformer": build_transformer}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m unigen.model.tinyworld", description=__doc__)
    ap.add_argument("--data", required=True, help="a corpus written by `unigen data synth --scale 20` (the "
                    "autoencoder trains on its pictures)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help=f"where to write (default {DEFAULT_OUT})")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to build (default all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--backbone-steps", type=int, default=4000)
    ap.add_argument("--vae-steps", type=int, default=4000)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / BUILD_FILE
    for part in args.parts:
        start = time.perf_counter()
        report = BUILDERS[part](out, args)
        report.update({"seconds": round(time.perf_counter() - start, 1), "torch": torch.__version__,
                       "machine": platform.machine(), "threads": args.threads,
                       "built": time.strftime("%Y-%m-%d"), "command": " ".join(_command(args, part))})
        record = json.loads(record_path.read_text()) if record_path.exists() else {}
        record[part] = report
        record_path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        _log(f"{part}: {json.dumps({k: v for k, v in report.items() if k != 'settings'})}")
    return 0


def _command(args, part: str) -> list[str]:
    """The command line that rebuilds ``part`` with these settings (recorded in BUILD.json)."""
    steps = {"backbone": ["--backbone-steps", str(args.backbone_steps)], "vae": ["--vae-steps", str(args.vae_steps)]}
    return ["python -m unigen.model.tinyworld", "--data", str(args.data), "--parts", part, "--seed", str(args.seed),
            *steps.get(part, [])]


def _log(message: str) -> None:
    print(message, flush=True)
