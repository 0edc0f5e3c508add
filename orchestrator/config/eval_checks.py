"""Checks of the recipe's ``eval:`` section that span its fields: something to evaluate (held-out sources,
prompts or suites; the suite names are checked by their field), prompts that are conversations the model can
draw, held-out sources that open as one mixture. Pure Python: the conversation rules are the model package's
own (``unigen.model.chat_template``), which imports no torch."""
from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from unigen.model import chat_template as tpl
from unigen.orchestrator.config.recipe import Recipe
from unigen.orchestrator.config.yamlload import Locations
from unigen.orchestrator.errors import Problem


def eval_problems(recipe: Recipe, locs: Locations, *, with_data: bool = True) -> list[Problem]:
    """Problems of ``recipe.eval`` (the sources' own fields are checked with data.sources'). Without
    ``with_data`` (the data section has problems of its own) the held-out sources are not mixed with it."""
    ev, out = recipe.eval, []
    if ev.every and not ev.sources and not ev.prompts and not ev.suites:
        out.append(locs.problem(("eval", "every"), "there is nothing to evaluate: add eval.sources (held-out data "
                                "for val_loss), eval.prompts (sample images) or eval.suites (scored generation), "
                                "or set eval.every: 0"))
    out += [locs.problem(("eval", "prompts", i), message) for i, prompt in enumerate(ev.prompts)
            if (message := prompt_problem(prompt))]
    if ev.sources and with_data:
        from unigen.model.data.spec import DataSpec

        try:
            DataSpec.model_validate({**recipe.data.model_dump(), "sources": [s.model_dump() for s in ev.sources]})
        except ValidationError as err:  # e.g. two held-out sources with one name
            out += [locs.problem(("eval", "sources"), str(e["msg"]).removeprefix("Value error, "))
                    for e in err.errors()]
    return out


def prompt_problem(prompt: str | list[dict[str, Any]]) -> str | None:
    """Why ``prompt`` (an eval.prompts entry) cannot be drawn, or None."""
    if isinstance(prompt, str):
        return None if prompt.strip() else "an empty prompt: write what to draw, or remove the entry"
    try:
        tpl.check_conversation(prompt)
    except ValueError as err:
        return str(err).replace("conversation 0, ", "", 1).replace("conversation 0: ", "", 1)
    empty = 0
    for m, message in enumerate(prompt):
        for i, item in enumerate(tpl.content_items(message)):
            if item["type"] == "image" and not isinstance(item.get("image"), str):
                return f"message {m}, item {i}: give the image as a path or URL (relative to where you submit)"
            if item["type"] == "image_gen" and item.get("image") is None and item.get("latents") is None:
                empty += 1
    if not empty:
        return "nothing to draw: add an item {type: image_gen} (without an image) where the model should draw"
    return None


def as_conversation(prompt: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An eval.prompts entry as a conversation: a string is one user turn with that text and one slot."""
    return tpl.one_turn(prompt) if isinstance(prompt, str) else prompt


def local_image_paths(prompt: str | list[dict[str, Any]]) -> list[str]:
    """Local image paths (no URL scheme) a prompt's conversation reads."""
    if isinstance(prompt, str):
        return []
    paths = []
    for message in prompt:
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            continue
        for item in message["content"]:
            image = item.get("image") if isinstance(item, dict) else None
            if isinstance(image, str) and "://" not in image:
                paths.append(image)
    return paths
