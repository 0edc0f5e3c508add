"""``unigen generate --run RUN|--checkpoint PATH (--prompt TEXT [--image IN ...] | --conversation FILE) --out OUT.png``.

Loads the run's exported model (else consolidates its newest checkpoint) and generates:
- ``--prompt`` (with any number of ``--image`` inputs, in order before the text): one user turn
  [images..., text] and an assistant turn holding one ``image_gen`` slot, the layout every task adapter
  trains on (t2i, edit, multi-image); writes ``--out``.
- ``--conversation FILE``: a JSON or YAML list of messages (image paths relative to the file) with one
  or more empty ``image_gen`` slots, filled in order (each sees the ones before it, see
  ``UniGenPipeline.generate_conversation``); writes ``--out`` for one image, else ``OUT-1.png``,
  ``OUT-2.png``, ... in slot order.
Every written path is printed.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from unigen.orchestrator.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def check_image_arg(path: str | None, flag: str = "--image") -> None:
    """Fail before loading the model (seconds to minutes) when an input image is missing."""
    if path and "://" not in path and not Path(path).expanduser().is_file():
        raise UserError(f"{flag} {path} does not exist; give the path of an image file")


def sampling_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline's sampling settings the command line gave (the pipeline's defaults for the rest)."""
    names = {"steps": "num_inference_steps", "guidance": "guidance_scale",
             "image_guidance": "image_guidance_scale", "seed": "seed", "height": "height", "width": "width"}
    return {key: getattr(args, arg) for arg, key in names.items() if getattr(args, arg, None) is not None}


def output_paths(out: Path, count: int) -> list[Path]:
    """``out`` for one image; ``<stem>-1<suffix>``, ``<stem>-2<suffix>``, ... for several."""
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{k}{out.suffix}") for k in range(1, count + 1)]


def load_conversation(path: str) -> list[dict]:
    """The messages of a ``--conversation`` file, image paths resolved against its folder; a UserError
    naming the file for anything that would stop generation (parse error, bad message, missing image,
    no empty slot)."""
    from unigen.model.chat_template import check_conversation
    from unigen.model.pipeline import empty_slots

    file = Path(path).expanduser()
    conversation = _parse_conversation_file(file)
    try:
        check_conversation(conversation)
    except ValueError as e:
        raise UserError(f"--conversation {file}: {e}") from None
    _resolve_image_paths(conversation, file)
    if not empty_slots(conversation):
        raise UserError(f"--conversation {file}: no empty image_gen slot to generate; add "
                        '{"type": "image_gen"} (without "image") where an image should be drawn')
    return conversation


def _parse_conversation_file(file: Path) -> Any:
    """JSON for ``.json`` files, YAML otherwise (YAML also reads most JSON)."""
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"--conversation {file}: cannot read it ({e.strerror or e})") from None
    import yaml

    kind = "JSON" if file.suffix.lower() == ".json" else "YAML"
    try:
        data = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise UserError(f"--conversation {file}: not valid JSON: line {e.lineno}, column {e.colno}: {e.msg}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise UserError(f"--conversation {file}: not valid YAML: {at}{getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, list):
        raise UserError(f"--conversation {file}: expected a list of messages "
                        f'[{{"role": "user", "content": [...]}}, ...], got {type(data).__name__}')
    return data


def _resolve_image_paths(conversation: list[dict], file: Path) -> None:
    """Relative image paths are relative to the conversation file (so a folder of files moves as one)."""
    from unigen.model.chat_template import content_items, where

    for m, message in enumerate(conversation):
        if isinstance(message["content"], str):
            continue
        for i, item in enumerate(content_items(message)):
            value = item.get("image")
            if item["type"] == "text" or not isinstance(value, str) or "://" in value:
                continue
            resolved = Path(value).expanduser()
            resolved = resolved if resolved.is_absolute() else file.parent / resolved
            if not resolved.is_file():
                raise UserError(f"--conversation {file}: {where(0, m, i)}: image {value} not found (looked at "
                                f"{resolved}); paths are relative to the conversation file's folder")
            message["content"][i] = {**item, "image": str(resolved)}


def _request(args: argparse.Namespace) -> list[dict]:
    """The conversation the command line asks for (checked before the model loads)."""
    if args.conversation:
        if args.image:
            raise UserError("--image goes with --prompt; in a --conversation file put input images as "
                            '{"type": "image", "image": PATH} items')
        return load_conversation(args.conversation)
    for image in args.image or []:
        check_image_arg(image)
    from unigen.model.chat_template import one_turn

    return one_turn(args.prompt, args.image or [])


def run(args: argparse.Namespace) -> int:
    from unigen.orchestrator.commands.runref import load_pipeline

    out = Path(args.out)
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError(f"--out {out}: give an image file name ending in .png, .jpg or .webp")
    conversation = _request(args)
    pipe = load_pipeline(args)
    try:
        images = pipe(conversation, **sampling_kwargs(args))
    except ValueError as e:  # bad sizes, unreadable input image, too long: the model says which
        raise UserError(str(e)) from None
    for path, image in zip(output_paths(out, len(images)), images):
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        print(f"wrote {path} ({image.width}x{image.height})")
    return 0
