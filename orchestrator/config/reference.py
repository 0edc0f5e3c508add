"""The field reference (every recipe and profile key: type, default, description), generated from the
models so it cannot drift: ``unigen validate --fields`` prints it, and a test checks that
runbooks/recipes-and-overrides.md lists every key it contains."""
from __future__ import annotations

import types
import typing
from typing import Any, Iterator

from pydantic import BaseModel

from unigen.orchestrator.config.problems import unwrap_model
from unigen.orchestrator.config.profile import Profile
from unigen.orchestrator.config.recipe import ModelSection, Recipe


def type_name(annotation: Any) -> str:
    """A short human name: ``int``, ``bf16 | fp32``, ``text or null``, ``list of SourceSpec``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:  # a type with a validator attached: name the type
        return type_name(args[0])
    if annotation is Any:
        return "any"
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        named = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is tuple:
        return "[" + ", ".join(type_name(a) for a in args) + "]"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return {str: "text", int: "int", float: "number", bool: "true/false"}.get(annotation, str(annotation))


def _default(field) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        return {dict: "{}", list: "[]"}.get(type(field.default_factory()), "(section defaults)")
    return "null" if field.default is None else str(field.default)


def iter_fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(dotted key, type, default, description) for every field, sections first then their keys."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        yield key, type_name(field.annotation), _default(field), (field.description or "").strip()
        inner = unwrap_model(field.annotation)
        if inner is not None:
            is_list = typing.get_origin(field.annotation) is list
            yield from iter_fields(inner, f"{key}.N." if is_list else f"{key}.")
        if inner is ModelSection:
            yield (f"{key}.<field>", "any", "the preset's", "Any unigen.model.config.UniGenConfig field (num_queries, "
                   "image_size, gradient_checkpointing, dtype, backbone_training, ...); mappings merge into the preset's.")


def reference_text() -> str:
    """The reference as aligned plain text (what ``unigen validate --fields`` prints)."""
    out = []
    for title, model in (("recipe", Recipe), ("profile", Profile)):
        rows = list(iter_fields(model))
        width = max(len(r[0]) for r in rows)
        out.append(f"{title} fields:")
        for key, kind, default, doc in rows:
            out.append(f"  {key.ljust(width)}  {kind} (default {default})  {doc}".rstrip())
        out.append("")
    return "\n".join(out).rstrip()


def reference_markdown() -> str:
    """The reference as Markdown tables (for the runbook)."""
    out = []
    for title, model in (("Recipe", Recipe), ("Profile", Profile)):
        out += [f"### {title} fields", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for key, kind, default, doc in iter_fields(model):
            out.append(f"| `{key}` | {kind.replace('|', '/')} | {default.replace('|', '/')} | {doc.replace('|', '/')} |")
        out.append("")
    return "\n".join(out)


BEGIN, END = "<!-- field-reference:begin (generated: python -m unigen.orchestrator.config.reference FILE) -->", \
    "<!-- field-reference:end -->"


def update_markdown(text: str) -> str:
    """``text`` with the block between the BEGIN / END markers replaced by the current reference."""
    head, sep, rest = text.partition(BEGIN)
    _old, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise ValueError(f"markers not found: add a line {BEGIN} and a line {END}")
    return f"{head}{BEGIN}\n{reference_markdown()}\n{END}{tail}"


if __name__ == "__main__":  # regenerate the reference inside a Markdown file
    import sys
    from pathlib import Path

    for name in sys.argv[1:]:
        path = Path(name)
        path.write_text(update_markdown(path.read_text()))
