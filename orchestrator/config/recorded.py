"""The typed recipe and profile of an existing run, rebuilt from its run.json.

run.json records ``Recipe.model_dump(mode="json")`` and ``Profile.model_dump(mode="json")``. Everything that
acts on a run after ``unigen submit`` (the per-rank runtime, the launchers, ``unigen resume``) rebuilds the
models here and reads their fields, so each default lives in one place: its pydantic field in recipe.py or
profile.py. Torch-free (a launcher's supervisor calls it).
"""
from __future__ import annotations

from typing import Any, Mapping

from pydantic import ValidationError

from unigen.orchestrator.config.profile import Profile
from unigen.orchestrator.config.recipe import Recipe
from unigen.orchestrator.errors import UserError


def _rebuilt(model: type[Recipe] | type[Profile], record: Mapping[str, Any], key: str, source: str | None):
    try:
        return model.model_validate(record.get(key))
    except ValidationError as e:
        where = source or f"run {record.get('run_id')} (run.json)"
        fields = "; ".join(f"{key}.{'.'.join(map(str, err['loc']))}: {err['msg']}" if err["loc"] else err["msg"]
                           for err in e.errors())
        raise UserError(f"{where}: the recorded {key} no longer validates ({fields}); submit the recipe again "
                        "instead") from None


def recorded_recipe(record: Mapping[str, Any], *, source: str | None = None) -> Recipe:
    """The run's resolved ``Recipe``; a UserError naming ``source`` (default: the run id) when run.json's
    ``recipe`` does not validate (written by another unigen version, or edited by hand)."""
    return _rebuilt(Recipe, record, "recipe", source)


def recorded_profile(record: Mapping[str, Any], *, source: str | None = None) -> Profile:
    """The run's ``Profile`` (its launcher's section always present), like ``recorded_recipe``."""
    return _rebuilt(Profile, record, "profile", source)
