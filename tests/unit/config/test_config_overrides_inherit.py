"""YAML rules, `base:` inheritance, dotted overrides and their selectors, and the model section."""
from __future__ import annotations

from pathlib import Path

import pytest

from unigen.orchestrator.config import load_recipe, resolve_submission
from unigen.orchestrator.config.overrides import apply_override, parse_overrides
from unigen.orchestrator.config.yamlload import Loc, Locations, load_yaml_text, parse_scalar
from unigen.orchestrator.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "recipes" / "smoke-pretrain.yaml"
SMOKE2 = ROOT / "recipes" / "smoke-instruct.yaml"
LOCAL = str(ROOT / "cluster_profiles" / "local.yaml")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def resolve(*recipes, overrides=(), profile=LOCAL):
    return resolve_submission(list(recipes), profile, list(overrides), purpose="validate", gpu_count=0)


# ---- YAML ---------------------------------------------------------------------------------------------
def test_yaml_uses_12_core_scalars():
    doc, _, problems = load_yaml_text("a: 1e-4\nb: 24:00:00\nc: no\nd: 2024-01-01\ne: 0x1f\nf: 1_000\ng: ~\n", "x")
    assert problems == []
    assert doc == {"a": 1e-4, "b": "24:00:00", "c": "no", "d": "2024-01-01", "e": 31, "f": 1000, "g": None}
    assert parse_scalar("5e-5") == 5e-5 and parse_scalar("[0.9, 0.95]") == [0.9, 0.95]
    assert parse_scalar("null") is None and parse_scalar("'007'") == "007"


def test_yaml_records_lines_and_refuses_duplicates():
    doc, locs, problems = load_yaml_text("train:\n  lr: 1\n  steps:\n    - 5\n    - 6\n  lr: 2\n", "f.yaml")
    assert locs.lookup(("train", "lr")) == Loc("f.yaml", 2)
    assert locs.lookup(("train", "steps", 1)) == Loc("f.yaml", 5)
    assert locs.lookup(("train", "nothing", "deeper")) == Loc("f.yaml", 1)  # nearest known parent
    assert [str(p) for p in problems] == ["f.yaml:6: train.lr: duplicate key (first set on line 2): keep one"]


# ---- base: ---------------------------------------------------------------------------------------------
def test_base_merges_mappings_replaces_lists_and_points_at_the_right_file(tmp_path):
    child = _write(tmp_path / "child.yaml", f"base: {SMOKE}\nname: child\ntrain:\n  lr: 2.0e-4\n"
                   "data:\n  sources:\n    - {uri: x.tar, format: webdataset, task: t2i}\n")
    recipe = load_recipe(child)
    assert recipe.name == "child" and recipe.train.lr == 2e-4
    base = load_recipe(SMOKE)
    assert base.train.lr != 2e-4  # so the child's own value is what is seen
    assert (recipe.train.max_steps, recipe.train.global_batch_size) == (base.train.max_steps,
                                                                       base.train.global_batch_size)  # from the base
    assert [s.uri for s in recipe.data.sources] == ["x.tar"]  # the list was replaced, not merged
    assert recipe.data.image_size == 64  # sibling keys of the replaced list survive
    assert recipe.base == str(SMOKE)

    bad = _write(tmp_path / "bad.yaml", f"base: {SMOKE}\nname: bad\ntrain:\n  lr: fast\n")
    with pytest.raises(ConfigError) as err:
        resolve(bad, overrides=["train.max_steps=0"])
    lines = str(err.value).splitlines()
    assert lines[0] == "override 'train.max_steps=0': train.max_steps: input should be greater than 0, got 0"
    assert lines[1].endswith("bad.yaml:4: train.lr: expected a number, got 'fast'")
    assert len(lines) == 2


def test_inherited_problem_points_into_the_base(tmp_path):
    base = _write(tmp_path / "base.yaml", SMOKE.read_text().replace("warmup_steps: 50", "warmup_steps: 4000"))
    child = _write(tmp_path / "child.yaml", "base: base.yaml\nname: c\n")
    with pytest.raises(ConfigError, match=r"base\.yaml:\d+: train\.warmup_steps: 4000 warmup steps leave no training"):
        load_recipe(child)
    assert base.exists()


def test_base_of_a_base_is_refused(tmp_path):
    _write(tmp_path / "a.yaml", f"base: {SMOKE}\nname: a\n")
    _write(tmp_path / "b.yaml", "base: a.yaml\nname: b\n")
    with pytest.raises(ConfigError, match=r"a\.yaml:1: base: .*has a base itself; inheritance is one level deep"):
        load_recipe(tmp_path / "b.yaml")


# ---- overrides -----------------------------------------------------------------------------------------
def test_parse_overrides_reads_selectors_targets_and_yaml_values():
    parsed, problems = parse_overrides(["train.lr=5e-5", "instruct:data.sources.0.weight=0.5",
                                        "profile.resources.nodes=4", "init_from=run:a-b", "nokey", "a..b=1"])
    assert [(o.selector, o.target, o.keys, o.value) for o in parsed] == [
        (None, "recipe", ("train", "lr"), 5e-5), ("instruct", "recipe", ("data", "sources", "0", "weight"), 0.5),
        (None, "profile", ("resources", "nodes"), 4), (None, "recipe", ("init_from",), "run:a-b")]
    assert [p.source for p in problems] == ["override 'nokey'", "override 'a..b=1'"]


def test_apply_creates_missing_sections_and_moves_the_location():
    doc, locs = {"train": {"lr": 1}}, Locations(Loc("f.yaml"), {("train",): Loc("f.yaml", 1),
                                                                 ("train", "lr"): Loc("f.yaml", 2)})
    (ov,), _ = parse_overrides(["tracking.run_name=try-3"])
    assert apply_override(doc, ov, locs) is None
    assert doc["tracking"] == {"run_name": "try-3"}
    (ov,), _ = parse_overrides(["train={lr: 3}"])
    apply_override(doc, ov, locs)
    assert doc["train"] == {"lr": 3}
    assert locs.lookup(("train", "lr")) == Loc("override 'train={lr: 3}'")  # the old file line is gone


def test_unprefixed_overrides_hit_every_stage_and_selectors_only_theirs():
    sub = resolve(SMOKE, SMOKE2, overrides=["train.max_steps=40", "instruct:train.lr=1e-5",
                                            "smoke-pretrain:train.warmup_steps=5", "2:checkpoint.every=7"])
    first, second = (s.recipe for s in sub.stages)
    assert first.train.max_steps == second.train.max_steps == 40
    assert (first.train.lr, second.train.lr) == (1e-3, 1e-5)
    assert (first.train.warmup_steps, second.train.warmup_steps) == (5, 20)
    assert (first.checkpoint.every, second.checkpoint.every) == (800, 7)
    assert sub.overrides == ("train.max_steps=40", "instruct:train.lr=1e-5", "smoke-pretrain:train.warmup_steps=5",
                             "2:checkpoint.every=7")


def test_profile_overrides_change_the_world_and_the_accumulation():
    assert resolve(SMOKE).stages[0].accumulation == 1
    sub = resolve(SMOKE, overrides=["profile.local.cpu_ranks=1"])
    assert sub.world_size == 1 and sub.stages[0].accumulation == 2
    with pytest.raises(ConfigError, match=r"32 is not a multiple of micro_batch_size 16 x world size 3 "
                                          r"\(local\.cpu_ranks=3 \(no GPU visible\)\) = 48: use e\.g\. "
                                          r"train\.global_batch_size=48"):
        resolve(SMOKE, overrides=["profile.local.cpu_ranks=3"])


def test_overrides_change_the_recipe_hash():
    plain, changed = resolve(SMOKE), resolve(SMOKE, overrides=["train.lr=2e-3"])
    assert plain.stages[0].recipe_sha256 != changed.stages[0].recipe_sha256
    assert resolve(SMOKE).stages[0].recipe_sha256 == plain.stages[0].recipe_sha256


# ---- the model section ---------------------------------------------------------------------------------
def test_model_overrides_reach_the_config_and_mappings_merge():
    sub = resolve(SMOKE, overrides=["model.num_queries=8", "model.dit_config.num_layers=1"])
    cfg = sub.stages[0].model_config
    assert cfg["num_queries"] == 8 and cfg["dit_config"]["num_layers"] == 1
    assert cfg["dit_config"]["num_attention_heads"] == 2  # the rest of the preset's DiT config is kept


def test_model_value_errors_come_from_the_model_package_with_their_key():
    with pytest.raises(ConfigError) as err:
        resolve(SMOKE, overrides=["model.cfg_drop_text=1.5", "model.backbone_training=partial"])
    text = str(err.value)
    assert "model.backbone_training: backbone_training='partial': choose one of" in text
    assert "model.cfg_drop_text: cfg_drop_text=1.5: must be a probability in [0, 1]" in text


def test_pretrained_folder_is_read_and_checked(tmp_path):
    from unigen.model.config import get_preset

    get_preset("tiny", num_queries=4).save_json(tmp_path / "config.json")
    sub = resolve(SMOKE, overrides=[f"model.pretrained={tmp_path}", "model.preset=null"])
    assert sub.stages[0].model_config["num_queries"] == 4
    with pytest.raises(ConfigError, match=r"model\.pretrained: no config\.json in"):
        resolve(SMOKE, overrides=[f"model.pretrained={tmp_path / 'nope'}"])


# ---- stages --------------------------------------------------------------------------------------------
def test_instruct_alone_warns_in_validate_and_fails_in_submit(tmp_path, monkeypatch):
    sub = resolve(SMOKE2)
    assert any("init_from: not set: an instruct stage starts from a stage-1 model" in w for w in sub.warnings)
    monkeypatch.chdir(tmp_path)  # no local data here: submit also reports the missing corpus
    with pytest.raises(ConfigError) as err:
        resolve_submission([SMOKE2], LOCAL, purpose="submit", gpu_count=0)
    assert "init_from: not set" in str(err.value) and "does not exist: write the synthetic corpus" in str(err.value)
    # init_from must name a run under the run root that has a committed checkpoint (test_config_one_pass.py)
    step = tmp_path / "unigen-runs" / "smoke-pretrain-1" / "checkpoints" / "step-8"
    step.mkdir(parents=True)
    (step / "COMMIT.json").write_text("{}")
    (step.parents[1] / "run.json").write_text('{"run_id": "smoke-pretrain-1", "status": "completed"}')
    ok = resolve_submission([SMOKE2], LOCAL, ["init_from=run:smoke-pretrain-1"], purpose="validate", gpu_count=0)
    assert ok.stages[0].recipe.init_from == "run:smoke-pretrain-1" and not ok.stages[0].starts_from_previous
