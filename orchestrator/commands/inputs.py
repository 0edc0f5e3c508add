"""Splitting ``submit`` / ``validate`` positional arguments into recipe files and KEY=VALUE overrides."""
from __future__ import annotations

from pathlib import Path


def split_inputs(items: list[str]) -> tuple[list[str], list[str]]:
    """(recipe paths, overrides) in command-line order.

    An item with ``=`` is an override unless it names an existing file. An item without ``=`` is a
    recipe when it exists, ends in .yaml/.yml or contains a ``/``; otherwise it is passed on as an
    override, so ``train.lr`` (a forgotten ``=value``) is reported as a malformed override rather than
    a missing file.
    """
    recipes, overrides = [], []
    for item in items:
        path = Path(item)
        if "=" in item and not path.is_file():
            overrides.append(item)
        elif path.exists() or item.endswith((".yaml", ".yml")) or "/" in item:
            recipes.append(item)
        else:
            overrides.append(item)
    return recipes, overrides
