"""Evaluation during training, on the tiny model in one process: val_loss is a function of the weights alone
(fixed samples, flow times and noise; the same on any number of ranks), evaluating leaves training's RNG,
mode and gradients as they were, and sample images are the same pixels every time."""
from __future__ import annotations

import json

import pytest
import torch

from tests.unit.model.model_helpers import tiny_pipeline
from unigen.model.data.spec import DataSpec
from unigen.model.data.synth.writers import write_corpus
from unigen.orchestrator.config.recipe import EvalSection
from unigen.orchestrator.errors import UserError
from unigen.orchestrator.runtime.evaluation import Evaluator

# The recipe's data section: the evaluator takes its settings (image_size, ...), never its training sources.
DATA = DataSpec(sources=[{"uri": "train.jsonl", "format": "jsonl", "task": "t2i"}], image_size=64, num_workers=0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return root, write_corpus(root, seed=0)


@pytest.fixture(autouse=True)
def _index_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIGEN_DATA_CACHE", str(tmp_path / "index-cache"))


def _section(root, manifest, **extra):
    return {"every": 4, "samples": 7, "seed": 3, "sources": manifest["heldout_sources"],
            "num_inference_steps": 3, **extra}


def _evaluator(pipe, section, run_dir, rank=0, world=1):
    return Evaluator(EvalSection.model_validate(section), DATA, pipe=pipe, run_dir=run_dir, device="cpu", rank=rank, world_size=world,
                     micro_batch_size=2, max_steps=10)


def test_val_loss_is_fixed_per_weights_and_leaves_training_untouched(corpus, tmp_path):
    root, manifest = corpus
    pipe = tiny_pipeline(seed=1)
    model = pipe.model.train()
    evaluator = _evaluator(pipe, _section(root, manifest), tmp_path)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = evaluator.run(4).metrics
    assert torch.equal(torch.get_rng_state(), before), "evaluation moved training's RNG"
    assert model.training and all(p.grad is None for p in model.parameters())
    torch.manual_seed(999)  # whatever training's RNG holds, the evaluation draws the same flow times and noise
    again = evaluator.run(8).metrics
    losses = {k: v for k, v in first.items() if k.startswith("val_loss")}
    assert set(losses) == {"val_loss", "val_loss/heldout-t2i", "val_loss/heldout-magicbrush"}
    assert losses == {k: v for k, v in again.items() if k.startswith("val_loss")}
    assert first["eval_s"] > 0
    with torch.no_grad():  # new weights, new loss: it measures the model
        model.queries.add_(0.5)
    assert evaluator.run(12).metrics["val_loss"] != first["val_loss"]


def test_val_loss_is_the_same_on_two_ranks_as_on_one(corpus, tmp_path):
    root, manifest = corpus
    pipe = tiny_pipeline(seed=2)
    pipe.model.eval()
    section = _section(root, manifest)
    one = _evaluator(pipe, section, tmp_path)
    halves = [_evaluator(pipe, section, tmp_path, rank=r, world=2) for r in (0, 1)]
    with torch.no_grad():
        alone = one.loss_metrics(one.local_totals(pipe.model))
        summed = one.loss_metrics(sum(h.local_totals(pipe.model) for h in halves))
    assert alone.keys() == summed.keys()
    for key in alone:
        assert summed[key] == pytest.approx(alone[key], rel=1e-12, abs=0), key
    # 7 samples in 4 micro-batches: rank 0 holds 0 and 2, rank 1 holds 1 and 3 (every rank two forwards).
    assert [(b.index, b.real) for b in halves[0].batches] == [(0, True), (2, True)]
    assert [(b.index, b.real) for b in halves[1].batches] == [(1, True), (3, True)]


def test_sample_images_are_written_on_rank_0_only_and_repeat_exactly(corpus, tmp_path):
    root, manifest = corpus
    edit = [{"role": "user", "content": [{"type": "image", "image": str(root / "heldout" / "edit-input.png")},
                                         {"type": "text", "text": "make it blue"}, {"type": "image_gen"},
                                         {"type": "text", "text": "and again"}, {"type": "image_gen"}]}]
    section = {"every": 5, "prompts": ["a red circle", edit], "num_inference_steps": 3, "seed": 0}
    pipe = tiny_pipeline(seed=3)
    first = _evaluator(pipe, section, tmp_path / "a").run(5)
    assert set(first.metrics) == {"eval_s"}  # no sources: no val_loss
    folder = tmp_path / "a" / "eval" / "step-5"
    assert first.folder == folder
    assert [i["file"] for i in first.images] == ["eval/step-5/prompt-0.png", "eval/step-5/prompt-1-0.png",
                                                 "eval/step-5/prompt-1-1.png"]
    assert json.loads((folder / "prompts.json").read_text())[1]["text"] == "make it blue / and again"
    again = _evaluator(pipe, section, tmp_path / "b").run(5)
    for image in first.images:
        assert (tmp_path / "a" / image["file"]).read_bytes() == (tmp_path / "b" / image["file"]).read_bytes()
    other = _evaluator(pipe, section, tmp_path / "c", rank=1, world=2).run(5)
    assert other.images == [] and other.folder is None and not (tmp_path / "c").exists()
    assert again.images == first.images


def test_a_missing_prompt_image_stops_the_attempt_at_setup(tmp_path):
    prompt = [{"role": "user", "content": [{"type": "image", "image": str(tmp_path / "nope.png")},
                                           {"type": "text", "text": "x"}, {"type": "image_gen"}]}]
    with pytest.raises(UserError, match=r"eval\.prompts\.1, message 0, item 0: the image .*nope\.png"):
        _evaluator(tiny_pipeline(), {"every": 2, "prompts": ["fine", prompt]}, tmp_path)


def test_the_schedule(tmp_path):
    pipe = tiny_pipeline()
    due = _evaluator(pipe, {"every": 4, "prompts": ["p"]}, tmp_path)
    assert [s for s in range(1, 11) if due.due(s)] == [4, 8, 10]  # and after the last step
    off = _evaluator(pipe, {"every": 0, "prompts": ["p"]}, tmp_path)
    assert not off.enabled and not any(off.due(s) for s in range(1, 11))


def test_suites_run_on_every_rank_and_rank_0_writes_them(tmp_path):
    """Every rank generates the same cases (ZeRO-3 needs the same forward passes); only rank 0 writes the
    suite files, and training's RNG and mode are left as they were."""
    section = {"every": 4, "suites": ["t2i", "edit"], "suite_samples": 2, "num_inference_steps": 2, "seed": 1}
    pipe = tiny_pipeline(seed=4)
    model = pipe.model.train()
    torch.manual_seed(7)
    before = torch.get_rng_state()
    result = _evaluator(pipe, section, tmp_path / "a").run(4)
    assert torch.equal(torch.get_rng_state(), before) and model.training
    folder = tmp_path / "a" / "eval" / "step-4"
    assert result.folder == folder and result.images == []
    assert [row["suite"] for row in result.suites] == ["t2i", "edit"]
    assert [row["count"] for row in result.suites] == [4, 2] and result.suites[0]["primary"] == "overall"
    document = json.loads((folder / "suites.json").read_text())
    assert document["suites"] == result.suites and document["settings"]["num_inference_steps"] == 2
    assert (folder / "suites.md").is_file() and (folder / "suites" / "t2i-0.png").is_file()
    other = _evaluator(pipe, section, tmp_path / "b", rank=1, world=2).run(4)
    assert other.suites == [] and other.folder is None and not (tmp_path / "b").exists()
    again = _evaluator(pipe, section, tmp_path / "c").run(4)  # a function of the weights
    assert again.suites == [{**row, "seconds": again.suites[i]["seconds"]} for i, row in enumerate(result.suites)]
    assert (tmp_path / "c" / "eval" / "step-4" / "suites" / "edit-0.png").read_bytes() == \
        (folder / "suites" / "edit-0.png").read_bytes()
    only_suites = _evaluator(pipe, {"every": 4, "suites": ["t2i"]}, tmp_path)
    assert only_suites.enabled and only_suites.suite_samples == 48
