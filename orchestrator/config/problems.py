"""pydantic validation errors -> one located, actionable Problem each.

pydantic knows what is wrong; this module says it in the recipe's terms: the dotted key path, the
file line, the valid keys for an unknown key (with a did-you-mean), the choices for a bad literal,
and a description of a missing field.
"""
from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from unigen.orchestrator.config.yamlload import Locations, PathT, dotted
from unigen.orchestrator.errors import Problem

_SHORT = 60
_SECRETISH = ("secret", "password", "token", "credential")
# pydantic error type -> what the value should have been, in YAML terms.
_EXPECTED = {
    "int_parsing": "a whole number", "int_type": "a whole number", "int_from_float": "a whole number (no fraction)",
    "float_parsing": "a number", "float_type": "a number",
    "bool_parsing": "true or false", "bool_type": "true or false",
    "string_type": "text (quote it in YAML)",
    "dict_type": "a mapping of key: value", "model_type": "a mapping of key: value",
    "model_attributes_type": "a mapping of key: value",
    "list_type": "a list", "tuple_type": "a list of the right length",
}


def unwrap_model(annotation: Any) -> Any:
    """The BaseModel class inside Optional[...], list[...], dict[..., ...] or Annotated[...], if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return unwrap_model(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, tuple, dict):  # the first model among the arguments
        return next(filter(None, map(unwrap_model, typing.get_args(annotation))), None)
    return None


def model_at(root: type[BaseModel], path: PathT) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``path`` (list indexes and dict keys skipped)."""
    current: type[BaseModel] | None = root
    for part in path:
        if current is None:
            return None
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            continue  # a list index or a free-form dict key: stay on the item's model
        current = unwrap_model(field.annotation)
    return current


def closest_key(key: Any, valid: list[str]) -> str | None:
    """The valid key an unknown ``key`` probably meant (``lrr`` -> ``lr``), if any."""
    guess = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
    return guess[0] if guess else None


def unknown_key_message(key: Any, valid: list[str], where: str) -> str:
    """``unknown key 'lrr' in train (did you mean 'lr'?); valid keys: ...``."""
    guess = closest_key(key, valid)
    hint = f" (did you mean {guess!r}?)" if guess else ""
    return f"unknown key {str(key)!r}{' in ' + where if where else ''}{hint}; valid keys: {', '.join(valid)}"


def show_value(value: Any, path: PathT = ()) -> str:
    """A short rendering of a user value for a message; never the value of a secret-looking key."""
    if any(s in str(p).lower() for p in path for s in _SECRETISH):
        return "(value hidden)"
    text = repr(value)
    return text if len(text) <= _SHORT else text[:_SHORT - 3] + "..."


def _message(err: dict[str, Any], root: type[BaseModel], path: PathT) -> str:
    kind = err["type"]
    parent = path[:-1]
    if kind == "extra_forbidden":
        cls = model_at(root, parent)
        valid = list(cls.model_fields) if cls is not None else []
        return unknown_key_message(path[-1], valid, dotted(parent))
    if kind == "missing":
        cls, key = model_at(root, parent), path[-1]
        field = cls.model_fields.get(key) if cls is not None and isinstance(key, str) else None
        return "missing required key" + (f" ({field.description.rstrip('.')})" if field and field.description else "")
    got = f", got {show_value(err.get('input'), path)}"
    if kind in ("literal_error", "enum"):
        return f"invalid value: choose one of {err['ctx']['expected']}{got}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}{got}"
    if kind == "value_error":
        return str(err["ctx"]["error"])
    msg = err["msg"]
    return (msg[0].lower() + msg[1:] if msg else kind) + got


def clean_loc(loc: tuple) -> PathT:
    """The document's key path of a pydantic error location."""
    # pydantic adds validator names to a location inside unions/functions; keep only key path parts.
    return tuple(p for p in loc if isinstance(p, int) or not (isinstance(p, str) and ("[" in p or p in (
        "function-after", "function-before", "function-wrap", "function-plain"))))


def problems_from_validation(err: ValidationError, root: type[BaseModel], locs: Locations) -> list[Problem]:
    """One Problem per pydantic error, in document order (then path order)."""
    out: dict[tuple[str, str], Problem] = {}  # each (key path, message) once
    for item in err.errors(include_url=False):
        path = clean_loc(item["loc"])
        message = _message(item, root, path)
        out.setdefault((dotted(path), message), locs.problem(path, message))
    return list(out.values())
