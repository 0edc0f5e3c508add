"""Dotted command-line overrides: ``train.lr=5e-5``, ``data.sources.0.weight=0.5``.

Rules (runbooks/recipes-and-overrides.md says the same):
- ``KEY=VALUE``; KEY is a dotted path, a number selects a list item (0-based); VALUE is read as YAML,
  with the file rules (``5e-5`` a float, ``null`` null, ``[a, b]`` a list, ``{k: v}`` a mapping).
- An override applies to EVERY stage of a multi-recipe submission, unless it starts with a selector:
  ``instruct:train.lr=1e-5`` (a stage), ``smoke-instruct:...`` (a recipe name) or ``2:...`` (the
  second recipe on the command line).
- ``profile.KEY=VALUE`` changes the profile (``profile.resources.nodes=4``); it takes no selector.
- Overrides are applied before validation, so they are type-checked exactly like the files, and a
  problem they cause is reported against the override, not a file line.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from unigen.orchestrator.config.yamlload import Loc, Locations, PathT, dotted, parse_scalar
from unigen.orchestrator.errors import Problem

EXAMPLE = "e.g. train.lr=5e-5 or data.sources.0.weight=0.5"


@dataclass(frozen=True)
class Override:
    """One parsed ``[SELECTOR:]KEY=VALUE``."""

    text: str
    selector: str | None
    target: str  # "recipe" | "profile"
    keys: tuple[str, ...]
    value: Any

    @property
    def label(self) -> str:
        """How problems name this override."""
        return _label(self.text)

    def selects(self, index: int, stage: str, name: str) -> bool:
        """Whether this override applies to recipe number ``index`` (1-based) of a submission."""
        return self.selector is None or self.selector in (str(index), stage, name)


def _label(text: str) -> str:
    shown = text if len(text) <= 80 else text[:77] + "..."
    return f"override {shown!r}"


def _bad(text: str, message: str) -> Problem:
    return Problem(_label(text), None, "", message)


def parse_overrides(items: list[str]) -> tuple[list[Override], list[Problem]]:
    """Parse every ``[SELECTOR:]KEY=VALUE``; problems for the malformed ones."""
    parsed = [_parse(text) for text in items]
    return [p for p in parsed if isinstance(p, Override)], [p for p in parsed if isinstance(p, Problem)]


def _parse(text: str) -> Override | Problem:
    if "=" not in text:
        return _bad(text, f"expected KEY=VALUE ({EXAMPLE})")
    left, raw = text.split("=", 1)
    selector = None
    if ":" in left:
        selector, left = left.split(":", 1)
        if not selector:
            return _bad(text, "empty selector before ':': write STAGE:KEY=VALUE or drop the ':'")
    keys = tuple(left.split("."))
    if not left or any(not k.strip() or k != k.strip() for k in keys):
        return _bad(text, f"KEY must be a dotted path of names without spaces ({EXAMPLE})")
    try:
        value = parse_scalar(raw)
    except yaml.YAMLError as err:
        reason = getattr(err, "problem", None) or str(err).splitlines()[0]
        return _bad(text, f"VALUE is not valid YAML ({reason}); quote text with special characters")
    if keys[0] != "profile":
        return Override(text, selector, "recipe", keys, value)
    if selector is not None:
        return _bad(text, "profile overrides apply to every stage: drop the selector")
    if len(keys) == 1:
        return _bad(text, "name a profile key, e.g. profile.resources.nodes=4")
    return Override(text, selector, "profile", keys[1:], value)


def apply_override(doc: dict, override: Override, locs: Locations) -> Problem | None:
    """Set ``override`` in ``doc`` (in place) and record where the value now comes from."""
    label = override.label
    node: Any = doc
    path: PathT = ()
    for i, key in enumerate(override.keys):
        last = i == len(override.keys) - 1
        if isinstance(node, list):
            if not key.isdigit():
                return Problem(label, None, dotted(path), f"is a list: select an item by number (0..{len(node) - 1})")
            index = int(key)
            if index >= len(node):
                span = f"0..{len(node) - 1}" if node else "none: it is empty"
                return Problem(label, None, dotted(path + (index,)),
                               f"no item {index}: the list has {len(node)} item(s) ({span}); set the whole list "
                               f"instead, e.g. {dotted(path)}=[...]")
            step: str | int = index
        elif isinstance(node, dict):
            step = key
            if not last and node.get(key) is None:
                node[key] = {}  # a section the file left out: create it (unknown keys fail validation)
        else:
            return Problem(label, None, dotted(path), f"is a single value, not a section: cannot set "
                           f"{'.'.join(override.keys[i:])} inside it")
        path = path + (step,)
        if last:
            node[step] = override.value
        else:
            node = node[step]
    locs.replace_subtree(path, Loc(label))
    return None
