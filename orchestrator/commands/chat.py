"""``unigen chat --run RUN --image IN --prompt TEXT``: the backbone's own answer about an image (the
frozen backbone keeps its understanding; this is Qwen2.5-VL's generation)."""
from __future__ import annotations

import argparse

from unigen.orchestrator.commands.generate import check_image_arg
from unigen.orchestrator.errors import UserError


def run(args: argparse.Namespace) -> int:
    """Entry point of ``unigen chat``."""
    from unigen.orchestrator.commands.runref import load_pipeline

    check_image_arg(args.image)
    pipe = load_pipeline(args)
    messages = [{"role": "user", "content": [{"type": "image", "image": args.image},
                                             {"type": "text", "text": args.prompt}]}]
    kwargs = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}
    try:
        print(pipe.chat(messages, **kwargs))
    except ValueError as e:
        raise UserError(str(e)) from None
    return 0
