"""Every shipped recipe with every shipped profile (both folders walked recursively), and the seed's
datasets in the real recipes: each named, with a weight and a comment, and listed by `unigen validate`.

test_config_shipped_files.py checks each file alone and the two-stage pipelines; this crosses them all."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from unigen.orchestrator import cli
from unigen.orchestrator.config import load_profile, load_recipe, resolve_submission, world_of
from unigen.orchestrator.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))
PROFILES = sorted((ROOT / "cluster_profiles").rglob("*.yaml"))
REAL = {"pretrain", "instruct"}  # sized for clusters: they must validate everywhere as shipped


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("UNIGEN_RUN_ROOT", raising=False)
    monkeypatch.delenv("UNIGEN_PROFILES_DIR", raising=False)


def test_the_cross_product_is_not_empty():
    assert len(RECIPES) >= 6 and len(PROFILES) >= 4
    assert REAL <= {p.stem for p in RECIPES}


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_validates_with_every_profile(recipe, profile):
    """A real recipe validates as shipped; a tiny one (global batch 32, for 1-2 ranks) may be refused by a
    cluster profile for its batch alone, and validates once the batch is scaled to that world."""
    try:
        sub = resolve_submission([recipe], str(profile), purpose="validate", gpu_count=0)
    except ConfigError as exc:
        assert recipe.stem not in REAL, str(exc)
        assert {p.path for p in exc.problems} == {"train.global_batch_size"}, str(exc)
        micro = load_recipe(recipe).train.micro_batch_size
        world = world_of(load_profile(profile), 0).size
        sub = resolve_submission([recipe], str(profile), [f"train.global_batch_size={micro * world}"],
                                 purpose="validate", gpu_count=0)
    (stage,) = sub.stages
    train = stage.recipe.train
    assert train.global_batch_size == train.micro_batch_size * stage.accumulation * sub.world_size
    assert all(src.weight > 0 for src in stage.recipe.data.sources)


# The seed's datasets per stage: (what to look for in a source name, its task).
STAGE1 = {
    "LAION-2B": ("laion2b", "t2i"), "LAION-400M": ("laion400m", "t2i"), "COYO-700M": ("coyo700m", "t2i"),
    "CC3M": ("cc3m", "t2i"), "CC12M": ("cc12m", "t2i"), "InstructPix2Pix": ("instructpix2pix", "edit"),
    "Laion-Aesthetics-High-Resolution-GoT": ("got-laion-aesthetics", "t2i"),
    "JourneyDB-GoT": ("got-journeydb", "t2i"), "OmniEdit-GoT": ("got-omniedit", "edit"),
    "interleaved (MMC4)": ("mmc4", "interleaved"),
}
STAGE2 = {
    "MagicBrush": ("magicbrush", "edit"), "SEED-Data-Edit real-world": ("seed-data-edit-real", "edit"),
    "SEED-Data-Edit multi-turn": ("seed-data-edit-multiturn", "edit"),
    "NYUv2 normals": ("nyu-normals", "normal"), "ScanNet normals": ("scannet-normals", "normal"),
    "KITTI depth": ("kitti", "depth"), "Sintel depth": ("sintel", "depth"), "COCO pose": ("coco-pose", "pose"),
    "OneFormer-labelled LAION segmentation": ("laion-oneformer", "segmentation"),
    "RefCOCO": ("refcoco", "grounding"), "several images in": ("", "multi_image"),
}


def _commented_names(path: Path) -> set[str]:
    """Names of the sources whose `- name:` line carries a comment."""
    return set(re.findall(r"^\s*- name: (\S+)\s+#\s*\S", path.read_text(), flags=re.M))


@pytest.mark.parametrize("stem,seed", [("pretrain", STAGE1), ("instruct", STAGE2)])
def test_the_real_recipes_name_every_seed_dataset_with_a_weight_and_a_comment(stem, seed):
    path = ROOT / "recipes" / f"{stem}.yaml"
    sources = load_recipe(path).data.sources
    commented = _commented_names(path)
    for dataset, (token, task) in seed.items():
        found = [s for s in sources if token in s.label() and s.task == task]
        assert found, f"{path.name}: no {task} source for {dataset} (a name containing {token!r})"
        for src in found:
            assert src.weight > 0, (dataset, src.label())
            assert src.label() in commented, f"{path.name}: source {src.label()} ({dataset}) has no comment"
    assert commented >= {s.label() for s in sources}, "every source of a real recipe says what it is"


def test_the_got_and_seed_declarations_use_the_published_keys():
    pretrain = {s.label(): s for s in load_recipe(ROOT / "recipes" / "pretrain.yaml").data.sources}
    assert pretrain["got-omniedit"].options["join"]["key"] == "omni_edit_id"
    assert pretrain["got-laion-aesthetics-hr"].fields["reasoning"] == "got"
    instruct = {s.label(): s for s in load_recipe(ROOT / "recipes" / "instruct.yaml").data.sources}
    assert instruct["seed-data-edit-multiturn"].fields["target"] == "edit_image_{n}"
    assert "train" in instruct["magicbrush"].uri  # not the dev split the eval reads
    assert {instruct[n].options["convention"] for n in ("nyu-normals", "scannet-normals")} == {"opencv_away"}
    seg = instruct["laion-oneformer-seg"]
    # `unigen data label-segmentation --out <folder>` writes one <shard>.jsonl (image, label) per shard
    assert seg.uri.endswith("laion-oneformer/*.jsonl") and seg.format == "jsonl"


def test_validate_lists_every_seed_dataset_by_name(capsys):
    code = cli.main(["validate", "recipes/pretrain.yaml", "recipes/instruct.yaml", "--profile", "slurm-a100",
                     "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    for stem, header in (("pretrain", "stage 1 data sources"), ("instruct", "stage 2 data sources")):
        sources = load_recipe(ROOT / "recipes" / f"{stem}.yaml").data.sources
        table = out.split(header, 1)[1].split("\n\n", 1)[0]
        assert f"({len(sources)} sources)" in table or f": {len(sources)}\n" in table
        for src in sources:
            row = next((ln.split() for ln in table.splitlines() if ln.split()[:1] == [src.label()]), None)
            assert row is not None, f"validate does not list {src.label()}"
            assert row[1:4] == [src.task, src.format, f"{src.weight:g}"] and row[-1] == src.uri
    assert out.rstrip().endswith("ok: 2 recipe(s) and profile slurm-a100 valid")
