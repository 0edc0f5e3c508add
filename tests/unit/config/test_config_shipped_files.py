"""Every shipped recipe and profile (found RECURSIVELY) validates, alone and together, and every recipe
header's commands and derived numbers are true."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from unigen.orchestrator.commands.inputs import split_inputs
from unigen.orchestrator.config import Recipe, load_profile, load_recipe, recipe_sha256, resolve_submission

ROOT = Path(__file__).resolve().parents[3]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))
PROFILES = sorted((ROOT / "cluster_profiles").rglob("*.yaml"))


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("UNIGEN_RUN_ROOT", raising=False)
    monkeypatch.delenv("UNIGEN_PROFILES_DIR", raising=False)


def test_the_shipped_files_are_there():
    names = {p.name for p in RECIPES}
    assert {"pretrain.yaml", "instruct.yaml", "smoke-pretrain.yaml", "smoke-instruct.yaml"} <= names
    assert {"local.yaml", "slurm-a100.yaml", "slurm-h100.yaml", "ray-cloud.yaml"} <= {p.name for p in PROFILES}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_recipe_validates_and_round_trips(path):
    recipe = load_recipe(path)
    dumped = recipe.model_dump(mode="json")
    again = Recipe.model_validate(dumped)
    assert again == recipe
    assert recipe_sha256(again) == recipe_sha256(recipe) == recipe_sha256(dumped)


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_profile_validates(path):
    profile = load_profile(path)
    assert profile.name == path.stem
    assert getattr(profile, profile.launcher) is not None


# The real pipeline runs on every profile; the smoke one (global batch 8) only where 8 splits evenly.
PIPELINES = [(("pretrain.yaml", "instruct.yaml"), p) for p in PROFILES] + \
    [(("smoke-pretrain.yaml", "smoke-instruct.yaml"), ROOT / "cluster_profiles" / "local.yaml")]


@pytest.mark.parametrize("stages,profile", PIPELINES, ids=lambda v: v.stem if isinstance(v, Path) else v[0])
def test_each_two_stage_pipeline_resolves(stages, profile):
    sub = resolve_submission([ROOT / "recipes" / s for s in stages], str(profile), purpose="validate", gpu_count=0)
    assert [s.recipe.stage for s in sub.stages] == ["pretrain", "instruct"]
    assert sub.stages[1].starts_from_previous
    for stage in sub.stages:
        t = stage.recipe.train
        assert t.global_batch_size == t.micro_batch_size * stage.accumulation * sub.world_size


def _header(path: Path) -> str:
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return "\n".join(lines)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_header_has_purpose_launch_override_and_true_derived_batch(path):
    header = _header(path)
    for label in ("Launch:", "Override:", "Derived:"):
        assert label in header, f"{path.name}: header lacks {label}"
    recipe = load_recipe(path)
    claims = re.findall(r"global batch (\d+) = micro (\d+) x accumulation (\d+) x (\d+)", header) + \
        re.findall(r"= micro (\d+) x accumulation (\d+) x (\d+)", header)
    assert claims, f"{path.name}: no derived batch line"
    for claim in claims:
        *total, micro, acc, world = (int(x) for x in claim)
        assert micro * acc * world == recipe.train.global_batch_size
        assert micro == recipe.train.micro_batch_size
        if total:
            assert total[0] == recipe.train.global_batch_size


def _header_commands(path: Path) -> list[list[str]]:
    text = _header(path).replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        line = re.sub(r"^\w+:\s*", "", line)
        if line.startswith(("unigen submit", "unigen validate")) and "<" not in line:
            commands.append(shlex.split(line.split("  (")[0])[2:])
    return commands


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_header_commands_resolve(path):
    commands = _header_commands(path)
    assert commands, f"{path.name}: no runnable command in the header"
    for argv in commands:
        profile = argv[argv.index("--profile") + 1]
        rest = [a for i, a in enumerate(argv) if a != "--profile" and (i == 0 or argv[i - 1] != "--profile")]
        recipes, overrides = split_inputs([a for a in rest if not a.startswith("--")])
        sub = resolve_submission(recipes, profile, overrides, purpose="validate", gpu_count=0)
        assert sub.stages, argv


def test_the_runbook_field_reference_is_current():
    """runbooks/recipes-and-overrides.md carries the generated field reference; regenerate it with
    `python -m unigen.orchestrator.config.reference runbooks/recipes-and-overrides.md` after changing a field."""
    from unigen.orchestrator.config.reference import update_markdown

    text = (ROOT / "runbooks" / "recipes-and-overrides.md").read_text()
    assert update_markdown(text) == text, "the field reference in runbooks/recipes-and-overrides.md is stale"


def test_the_evaluation_runbook_snippet_is_a_valid_eval_section(tmp_path):
    """runbooks/evaluation.md's `eval:` block, on the pretrain recipe, passes every check `unigen validate` runs."""
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "runbooks" / "evaluation.md").read_text(), flags=re.S)
    assert blocks and all(b.startswith("eval:") for b in blocks)
    for i, block in enumerate(blocks):
        recipe = tmp_path / f"eval-{i}.yaml"
        recipe.write_text(f"base: {ROOT / 'recipes' / 'pretrain.yaml'}\n{block}")
        sub = resolve_submission([recipe], str(ROOT / "cluster_profiles" / "slurm-a100.yaml"), purpose="validate",
                                 gpu_count=0)
        ev = sub.stages[0].recipe.eval
        assert ev.every == 1000 and len(ev.sources) == 1 and len(ev.prompts) == 2 and ev.sources[0].task == "t2i"
        assert ev.suites == ["t2i", "edit", "depth"] and ev.suite_samples == 48
