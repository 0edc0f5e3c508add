"""``unigen generate --run RUN|--checkpoint PATH --prompt TEXT [--image IN] --out OUT.png``.

Loads the run's exported model (else consolidates its newest checkpoint), builds a one-turn
conversation (the input image if given, the prompt, one ``image_gen`` slot) and writes the image.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from unigen.orchestrator.errors import UserError


def check_image_arg(path: str | None) -> None:
    if path and "://" not in path and not Path(path).is_file():
        raise UserError(f"--image {path} does not exist")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``unigen generate``."""
    from unigen.model.chat_template import one_turn
    from unigen.orchestrator.commands.runref import load_pipeline

    check_image_arg(args.image)
    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise UserError(f"--out {out}: give an image file name ending in .png, .jpg or .webp")
    pipe = load_pipeline(args)
    kwargs = {k: v for k, v in {"num_inference_steps": args.steps, "guidance_scale": args.guidance,
                                "seed": args.seed, "height": args.height, "width": args.width}.items() if v is not None}
    try:
        images = pipe(one_turn(args.prompt, args.image or None), **kwargs)
    except ValueError as e:  # bad sizes, unreadable input image: the model says which
        raise UserError(str(e)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(out)
    print(f"wrote {out} ({images[0].width}x{images[0].height})")
    return 0
