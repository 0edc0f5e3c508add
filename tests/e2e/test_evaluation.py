"""Evaluation inside a real run (2 CPU ranks, ZeRO-3): evaluating every other step changes nothing about
training, and evaluates the same final weights to the same val_loss as a run that evaluated only at the end."""
from __future__ import annotations

import json

import pytest

from tests.e2e.cli import SHORT, cli, cli_env, losses_by_step, run_dirs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _evals(run_dir):
    return [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]


def test_evaluating_every_other_step_leaves_training_bit_identical(workspace, reference_run, tmp_path):
    cli(workspace, "submit", "recipes/smoke-pretrain.yaml", "--profile", "local", "--wait", *SHORT, "eval.every=2",
        env=cli_env(tmp_path), check=True)
    (run_dir,) = run_dirs(tmp_path)
    assert losses_by_step(run_dir) == losses_by_step(reference_run)  # every step's loss, bit for bit
    evals, reference = _evals(run_dir), _evals(reference_run)
    assert [e["step"] for e in evals] == [2, 4, 6, 8, 10, 12] and [e["step"] for e in reference] == [12]
    assert evals[-1]["val_loss"] == reference[0]["val_loss"]  # same weights, same fixed held-out loss
    assert len({e["val_loss"] for e in evals}) == 6  # and it moves as the weights do
    assert all((run_dir / image).is_file() for e in evals for image in e["images"])
