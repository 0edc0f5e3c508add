"""YAML documents with the line of every key, so each problem can point at ``file:line``.

Scalars follow YAML 1.2's core schema rather than PyYAML's YAML 1.1 defaults, because the 1.1 rules
bite exactly the values recipes and profiles hold: ``1e-4`` is a float here (1.1: a string),
``24:00:00`` a string (1.1: the base-60 integer 86400), ``no`` / ``on`` strings (1.1: booleans) and
``2024-01-01`` a string (1.1: a date). Duplicate keys are an error (PyYAML silently keeps the last).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from unigen.orchestrator.errors import Problem

PathT = tuple  # a key path: str keys and int list indexes, e.g. ("data", "sources", 0, "weight")
_MAX_DEPTH = 64


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema implicit scalars."""

    yaml_implicit_resolvers: dict = {}


def _int(loader: yaml.SafeLoader, node: ScalarNode) -> int:
    text = loader.construct_scalar(node).replace("_", "")
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    base = {"0x": 16, "0o": 8}.get(body[:2].lower(), 10)
    return sign * int(body[2:] if base != 10 else body, base)


for _tag, _regexp, _first in (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9][0-9_]*|0[xX][0-9a-fA-F_]+|0[oO][0-7_]+)$", "-+0123456789"),
    ("tag:yaml.org,2002:float",
     r"^(?:[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
     r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+0123456789."),
    ("tag:yaml.org,2002:merge", r"^(?:<<)$", "<"),
):
    _Loader.add_implicit_resolver(_tag, re.compile(_regexp), list(_first))
_Loader.add_constructor("tag:yaml.org,2002:int", _int)


@dataclass(frozen=True)
class Loc:
    """Where a value came from: a file (with the line of its key) or an override."""

    source: str
    line: int | None = None


class Locations:
    """Key path -> Loc for one document; unknown paths fall back to their nearest known parent."""

    def __init__(self, default: Loc, entries: dict[PathT, Loc] | None = None):
        self.default = default
        self.entries: dict[PathT, Loc] = dict(entries or {})

    def lookup(self, path: PathT) -> Loc:
        for end in range(len(path), 0, -1):
            loc = self.entries.get(tuple(path[:end]))
            if loc is not None:
                return loc
        return self.default

    def problem(self, path: PathT, message: str) -> Problem:
        """A Problem at ``path``, placed at its (or its nearest parent's) source and line."""
        loc = self.lookup(path)
        return Problem(loc.source, loc.line, dotted(path), message)

    def replace_subtree(self, path: PathT, loc: Loc | None = None) -> None:
        """``path`` now comes from ``loc`` (None: from wherever its parent does), and nothing below it keeps
        its old place."""
        n = len(path)
        for key in [k for k in self.entries if k[:n] == tuple(path)]:
            del self.entries[key]
        if loc is not None:
            self.entries[tuple(path)] = loc


def dotted(path: PathT) -> str:
    """``("data", "sources", 0, "weight")`` -> ``data.sources.0.weight`` (the override syntax)."""
    return ".".join(str(p) for p in path)


def load_yaml_file(path: Path, label: str) -> tuple[Any, Locations, list[Problem]]:
    """Parse ``path``; ``label`` is how problems name the file. Returns (document, locations, problems)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, Locations(Loc(label)), [Problem(label, None, "", "file not found")]
    except IsADirectoryError:
        return None, Locations(Loc(label)), [Problem(label, None, "", "is a folder, not a YAML file")]
    except UnicodeDecodeError as err:
        return None, Locations(Loc(label)), [Problem(label, None, "", f"not UTF-8 text ({err.reason})")]
    return load_yaml_text(text, label)


def load_yaml_text(text: str, label: str) -> tuple[Any, Locations, list[Problem]]:
    """Parse one YAML document from ``text`` (see ``load_yaml_file``)."""
    locs = Locations(Loc(label))
    problems: list[Problem] = []
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        doc = None if node is None else _build(node, (), locs, loader, problems, label, 0)
        return doc, locs, problems
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        what = err.problem or err.context or "invalid YAML"
        column = f" (column {mark.column + 1})" if mark else ""
        return None, locs, [Problem(label, line, "", f"invalid YAML: {what}{column}")]
    except yaml.YAMLError as err:
        return None, locs, [Problem(label, None, "", f"invalid YAML: {err}")]
    finally:
        loader.dispose()


def parse_scalar(text: str) -> Any:
    """A command-line value read with the same rules as a file (``5e-5`` -> float, ``[1, 2]`` -> list);
    ``yaml.YAMLError`` on text that is not one YAML value."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _build(node, path: PathT, locs: Locations, loader: _Loader, problems: list[Problem], label: str,
           depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise yaml.MarkedYAMLError(problem="nested too deeply (a recursive alias?)", problem_mark=node.start_mark)
    if isinstance(node, MappingNode):
        loader.flatten_mapping(node)  # resolves `<<: *anchor` merges
        out: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                problems.append(Problem(label, line, dotted(path), "a key must be a plain name, not a list or mapping"))
                continue
            key = loader.construct_object(key_node, deep=True)
            if key in first_line:
                problems.append(Problem(label, line, dotted(path + (key,)),
                                        f"duplicate key (first set on line {first_line[key]}): keep one"))
                continue
            first_line[key] = line
            locs.entries[path + (key,)] = Loc(label, line)
            out[key] = _build(value_node, path + (key,), locs, loader, problems, label, depth + 1)
        return out
    if isinstance(node, SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            locs.entries[path + (i,)] = Loc(label, item.start_mark.line + 1)
            items.append(_build(item, path + (i,), locs, loader, problems, label, depth + 1))
        return items
    return loader.construct_object(node, deep=True)
