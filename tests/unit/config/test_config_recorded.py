"""The typed recipe and profile of a run, rebuilt from run.json (what the runtime and the launchers read): the
same values as submitted, each default from its field, and a clear error when run.json no longer validates."""
from __future__ import annotations

from pathlib import Path

import pytest

from unigen.orchestrator.config import load_profile, load_recipe
from unigen.orchestrator.config.recorded import recorded_profile, recorded_recipe
from unigen.orchestrator.errors import UserError

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("name", ["smoke-pretrain", "smoke-instruct", "pretrain", "instruct"])
def test_a_recorded_recipe_comes_back_as_submitted(name):
    recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml")
    record = {"run_id": "r1", "recipe": recipe.model_dump(mode="json")}
    again = recorded_recipe(record)
    assert again == recipe and again.model_dump(mode="json") == record["recipe"]


def test_defaults_come_from_the_fields():
    record = {"run_id": "r1", "recipe": {
        "name": "x", "stage": "pretrain", "model": {"preset": "tiny"},
        "data": {"sources": [{"uri": "a.jsonl", "format": "jsonl", "task": "t2i"}]},
        "train": {"max_steps": 3, "global_batch_size": 2, "micro_batch_size": 1, "lr": 1e-4}},
        "profile": {"name": "p", "launcher": "local"}}
    recipe, profile = recorded_recipe(record), recorded_profile(record)
    assert (recipe.train.seed, recipe.train.warmup_steps, recipe.train.min_lr_ratio, recipe.train.log_every) == \
        (0, 0, 0.1, 10)
    assert (recipe.checkpoint.keep_last, recipe.deepspeed.zero_stage, recipe.eval.samples) == (3, 3, 32)
    assert profile.local is not None and profile.local.max_restarts == 3  # the launcher's section, filled in


@pytest.mark.parametrize("name", ["local", "slurm-a100", "ray-cloud"])
def test_a_recorded_profile_comes_back_as_submitted(name):
    profile = load_profile(ROOT / "cluster_profiles" / f"{name}.yaml")
    assert recorded_profile({"run_id": "r1", "profile": profile.model_dump(mode="json")}) == profile


def test_a_run_json_that_no_longer_validates_is_a_user_error_naming_the_run_and_field():
    record = {"run_id": "r1", "recipe": {"name": "x"}, "profile": {"name": "p", "launcher": "local",
                                                                    "local": {"max_restart": 3}}}
    with pytest.raises(UserError, match=r"^run r1 \(run.json\): the recorded recipe no longer validates "
                       r"\(recipe.stage: Field required; recipe.model: Field required; .*\); submit the recipe again"):
        recorded_recipe(record)
    with pytest.raises(UserError, match=r"^/runs/r1/run.json: the recorded profile no longer validates "
                       r"\(profile.local.max_restart: Extra inputs are not permitted\)"):
        recorded_profile(record, source="/runs/r1/run.json")
