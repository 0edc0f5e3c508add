"""Reading a recipe or profile file together with its ``base:`` (one level deep).

The child's mappings merge into the base's key by key; anything else the child sets (values, lists)
replaces the base's. A base that has a base of its own is refused rather than followed: one level keeps
"where does this value come from" answerable by reading two files. Every value keeps the file and line
it came from, so a problem inherited from the base points into the base.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from unigen.orchestrator.config.yamlload import Locations, PathT, load_yaml_file
from unigen.orchestrator.errors import Problem


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (shorter messages)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _load_mapping(path: Path, kind: str) -> tuple[dict | None, Locations, list[Problem]]:
    label = display_path(path)
    doc, locs, problems = load_yaml_file(path, label)
    if problems:
        return None, locs, problems
    if doc is None:
        return None, locs, [Problem(label, None, "", f"the file is empty: a {kind} is a YAML mapping "
                                    "(see runbooks/recipes-and-overrides.md)")]
    if not isinstance(doc, dict):
        return None, locs, [Problem(label, 1, "", f"a {kind} is a YAML mapping of key: value, "
                                    f"not a {type(doc).__name__}")]
    return doc, locs, []


def _merge(base: Any, child: Any, path: PathT, out_locs: Locations) -> Any:
    if isinstance(base, dict) and isinstance(child, dict):
        merged = copy.deepcopy(base)
        for key, value in child.items():
            merged[key] = _merge(base.get(key), value, path + (key,), out_locs)
        return merged
    # Replaced wholesale: nothing at or below this path keeps the base's position.
    out_locs.replace_subtree(path)
    return copy.deepcopy(child)


def load_document(path: Path, kind: str) -> tuple[dict | None, Locations, list[Problem]]:
    """The merged document of ``path`` (+ its base), its locations and the problems found reading them."""
    doc, locs, problems = _load_mapping(path, kind)
    if doc is None:
        return None, locs, problems
    base_ref = doc.get("base")
    if base_ref is None:
        return doc, locs, []
    if not isinstance(base_ref, str) or not base_ref.strip():
        return None, locs, [locs.problem(("base",), f"expected the path of a base {kind} file (relative to "
                                         "this file's folder)")]
    base_path = path.parent / base_ref
    base_doc, base_locs, base_problems = _load_mapping(base_path, kind)
    if base_problems:
        if not base_path.is_file():
            return None, locs, [locs.problem(("base",), f"base {kind} not found: {display_path(base_path)} "
                                             "(a base path is relative to the folder of the file naming it)")]
        return None, locs, base_problems
    if base_doc.get("base") is not None:
        return None, locs, [base_locs.problem(("base",), f"{display_path(base_path)} is the base of "
                                              f"{display_path(path)} and has a base itself; inheritance is one "
                                              "level deep: copy what you need from its base into it")]
    merged_locs = Locations(locs.default, base_locs.entries)
    merged = _merge(base_doc, doc, (), merged_locs)
    # Keys only the base sets keep the base's file and line; whatever the child sets is the child's.
    merged_locs.entries.update(locs.entries)
    return merged, merged_locs, []
