"""Recipes and cluster profiles as typed, validated models (torch-free; imported by `unigen validate`
and `unigen submit`, never by `unigen --help`).

- ``resolve_submission(recipe_paths, profile_name, overrides, name)`` -> ``Submission``: every stage
  typed and checked against the profile, or one ``ConfigError`` listing every problem with its place.
- ``Recipe`` / ``Profile``: the models (``model_dump(mode="json")`` is what run.json records);
  ``load_recipe`` / ``load_profile`` read one file; ``recipe_sha256`` hashes a resolved recipe.
"""
from unigen.orchestrator.config.profile import Profile
from unigen.orchestrator.config.recipe import Recipe
from unigen.orchestrator.config.resolve import (ResolvedStage, Submission, load_profile, load_recipe,
                                                recipe_sha256, resolve_submission, run_root_for)
from unigen.orchestrator.config.world import World, visible_gpus, world_of

__all__ = ["Profile", "Recipe", "ResolvedStage", "Submission", "World", "load_profile", "load_recipe",
           "recipe_sha256", "resolve_submission", "run_root_for", "visible_gpus", "world_of"]
