"""What the cross-field checks can still read in a document that failed validation.

pydantic rejects a whole recipe for one bad key, so without this the cross-field and batch checks would
wait for the user's next round. Here each top-level section is validated on its own; inside a section
that fails, the keys pydantic names are dropped (their defaults stand in) and the section is validated
again, a few times at most. What comes back is a model built from the sections that validated, and the
key paths whose values are in doubt: dropped, missing, or the key an unknown key probably meant
(``lrr`` -> ``lr``). A check runs only when none of the paths it reads is in doubt, so a default that
stands in for a bad value never produces a problem of its own.

The schema problems themselves are not made here: they come from pydantic's errors on the whole document
(problems.py), in the user's terms.
"""
from __future__ import annotations

import contextlib
import copy
import functools
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError, create_model

from unigen.orchestrator.config.problems import clean_loc, closest_key, model_at
from unigen.orchestrator.config.yamlload import PathT

M = TypeVar("M", bound=BaseModel)
_ROUNDS = 5  # drop-and-retry rounds per section; each round drops every key pydantic named


@dataclass(frozen=True)
class Salvaged(Generic[M]):
    """``value``: the model (``model_construct`` where it did not validate whole, so a section in doubt
    may be its default or absent); ``doubt``: the key paths not to read."""

    value: M
    doubt: frozenset[PathT] = frozenset()

    def readable(self, *paths: PathT) -> bool:
        """True when no path in doubt is one of ``paths``, inside one, or contains one."""
        return not any(p[:len(d)] == d[:len(p)] for p in paths for d in self.doubt)  # one a prefix of the other

    def intact(self, path: PathT) -> bool:
        """True when neither ``path`` nor a mapping or list holding it is in doubt (keys inside it may be):
        its items can be read one by one, each asked with ``readable``."""
        return not any(d == path[:len(d)] for d in self.doubt)

    def doubting(self, *paths: PathT) -> Salvaged[M]:
        return Salvaged(self.value, self.doubt | frozenset(paths))


def salvage(cls: type[M], doc: dict[str, Any]) -> Salvaged[M]:
    """The sections of ``doc`` that validate (after dropping bad keys), as a ``cls`` with what is in
    doubt. Never raises for bad input."""
    pruned: dict[str, Any] = {}
    doubt: set[PathT] = set()
    for key in doc:
        if key not in cls.model_fields:  # an unknown top-level key: doubt what it probably meant
            doubt |= _guess(cls, (), key)
    for name in cls.model_fields:
        if name not in doc:
            if cls.model_fields[name].is_required():
                doubt.add((name,))
            continue
        value, section_doubt = _section(cls, name, doc[name])
        doubt |= section_doubt
        if value is not _BROKEN:
            pruned[name] = value
    try:  # every required section stood: validate it whole, so the model's own validators run too
        return Salvaged(cls.model_validate(pruned), frozenset(doubt))
    except ValidationError:
        good = {name: getattr(_one_field_model(cls, name).model_validate({name: value}), name)
                for name, value in pruned.items()}
        return Salvaged(cls.model_construct(**good), frozenset(doubt))


_BROKEN = object()


@functools.cache
def _one_field_model(cls: type[BaseModel], name: str) -> type[BaseModel]:
    # A model of that one field (its type, default and constraints), so a section validates alone and its
    # errors keep the recipe's key paths.
    field = cls.model_fields[name]
    return create_model(f"{cls.__name__}_{name}", **{name: (field.annotation, field)})


def _section(cls: type[BaseModel], name: str, value: Any) -> tuple[Any, set[PathT]]:
    """The section's value with the keys pydantic refused dropped (``_BROKEN`` when it cannot stand),
    and the key paths now in doubt."""
    single = _one_field_model(cls, name)
    doc = {name: copy.deepcopy(value)}
    doubt: set[PathT] = set()
    for _ in range(_ROUNDS):
        try:
            single.model_validate(doc)
            return doc[name], doubt
        except ValidationError as err:
            targets: set[PathT] = set()
            for item in err.errors(include_url=False):
                path = clean_loc(item["loc"])
                if item["type"] == "extra_forbidden":
                    doubt |= _guess(cls, path[:-1], path[-1])
                    targets.add(path)
                elif item["type"] == "missing":  # a required key: the mapping that lacks it cannot stand
                    doubt.add(path)
                    targets.add(path[:-1])
                else:
                    targets.add(path)
            for target in sorted(targets, key=_deletion_order):
                if len(target) <= 1:  # the section itself is wrong
                    return _BROKEN, doubt | {(name,)}
                doubt.add(target[:-1] if isinstance(target[-1], int) else target)
                _delete(doc, target)
    return _BROKEN, doubt | {(name,)}


def _deletion_order(path: PathT) -> tuple:
    # Later list items first, so deleting one does not shift the index of another still to delete.
    return tuple(-p if isinstance(p, int) else 0 for p in path), repr(path)


def _guess(cls: type[BaseModel], parent: PathT, key: Any) -> set[PathT]:
    """The key path an unknown ``key`` under ``parent`` probably meant (``lrr`` -> ``lr``), if any."""
    model = model_at(cls, parent)
    guess = closest_key(key, list(model.model_fields)) if model is not None else None
    return {parent + (guess,)} if guess else set()


def _delete(doc: Any, path: PathT) -> None:
    with contextlib.suppress(KeyError, IndexError, TypeError):  # gone with its parent, or not a container
        node = doc
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]
