"""recipes/smoke-instruct.yaml trains every stage-2 task of recipes/instruct.yaml, normals and pose
included: each task has a source with a weight, the mixture of the recipe's run draws every source, and
the normal and pose sources, as declared, open on the synthetic corpus and serve image targets."""
from collections import Counter
from pathlib import Path

import numpy as np

from tests.unit.data.data_helpers import items, ok
from unigen.model.data.mixture import Mixture
from unigen.model.data.sources import open_source
from unigen.orchestrator.config import load_recipe

ROOT = Path(__file__).resolve().parents[3]


def test_smoke_instruct_has_every_stage2_task_and_the_run_samples_each_source(corpus, tmp_path, monkeypatch):
    smoke = load_recipe(ROOT / "recipes" / "smoke-instruct.yaml")
    real = load_recipe(ROOT / "recipes" / "instruct.yaml")
    tasks = {s.task for s in smoke.data.sources}
    assert {s.task for s in real.data.sources} <= tasks and {"normal", "pose"} <= tasks
    assert all(s.weight > 0 for s in smoke.data.sources)

    root, _ = corpus
    (tmp_path / "unigen-data").mkdir()
    (tmp_path / "unigen-data" / "shapes").symlink_to(root)
    monkeypatch.chdir(tmp_path)  # the recipe's uris are relative to where `unigen submit` runs
    opened = [open_source(s, smoke.data.image_size, index=i) for i, s in enumerate(smoke.data.sources)]
    mix = Mixture([s.name for s in opened], [s.weight for s in smoke.data.sources], [len(s) for s in opened],
                  smoke.train.seed)
    samples = smoke.train.max_steps * smoke.train.global_batch_size
    drawn = Counter(opened[mix.source_of(g)].spec.task for g in range(samples))
    total = sum(s.weight for s in smoke.data.sources)
    for task in ("normal", "pose"):
        share = sum(s.weight for s in smoke.data.sources if s.task == task) / total
        assert drawn[task] > 0.8 * share * samples, (task, drawn)  # ~6.7 % each: ~1280 of 19200 samples
    assert set(drawn) == tasks

    for src in opened:
        if src.spec.task in ("normal", "pose"):
            conv = ok(src, 0)
            target = np.asarray(items(conv, "image_gen")[0]["image"])
            assert target.shape == (64, 64, 3) and target.std() > 0, src.name
