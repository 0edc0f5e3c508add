"""Evaluation inside a real run (2 CPU ranks, ZeRO-3): evaluating every other step (val_loss, sample images and
the t2i suite) changes nothing about training, and evaluates the same final weights to the same val_loss as a
run that evaluated only at the end; the suite results reach eval.jsonl, run.json and MLflow. Then
`unigen eval` scores that run's final model and one of its checkpoints."""
from __future__ import annotations

import json

import pytest

from tests.e2e.cli import SHORT, cli, cli_env, losses_by_step, record, run_dirs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
# The t2i suite at every evaluation, small enough for 2 CPU cores (4 cases, 2 sampling steps).
SUITES = ["eval.suites=[t2i]", "eval.suite_samples=4", "eval.num_inference_steps=2"]


def _evals(run_dir):
    return [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]


def _in_unit_range(metrics: dict) -> bool:
    """Every score is a fraction; the t2i suite's flow losses and prompt_use (1 - their ratio, below 0 for a
    model that does better with the wrong caption) are not scores."""
    not_scores = ("loss_matched", "loss_swapped", "prompt_use")
    return all(v is None or 0.0 <= v <= 1.0 for k, v in metrics.items() if k not in not_scores)


@pytest.fixture(scope="module")
def evaluated_run(workspace, tmp_path_factory):
    """smoke-pretrain as the reference run, evaluating every other step with the t2i suite. `unigen eval`
    below writes into this run, never into the shared reference run."""
    root = tmp_path_factory.mktemp("eval-runs")
    cli(workspace, "submit", "recipes/smoke-pretrain.yaml", "--profile", "local", "--wait", *SHORT, "eval.every=2",
        *SUITES, env=cli_env(root), check=True)
    (run_dir,) = run_dirs(root)
    return run_dir


def test_evaluating_every_other_step_leaves_training_bit_identical(evaluated_run, reference_run):
    run_dir = evaluated_run
    assert losses_by_step(run_dir) == losses_by_step(reference_run)  # every step's loss, bit for bit
    evals, reference = _evals(run_dir), _evals(reference_run)
    assert [e["step"] for e in evals] == [2, 4, 6, 8, 10, 12] and [e["step"] for e in reference] == [12]
    assert evals[-1]["val_loss"] == reference[0]["val_loss"]  # same weights, same fixed held-out loss
    assert len({e["val_loss"] for e in evals}) == 6  # and it moves as the weights do
    assert all((run_dir / image).is_file() for e in evals for image in e["images"])


def test_the_suite_results_of_training_reach_eval_jsonl_run_json_and_mlflow(evaluated_run):
    from mlflow import MlflowClient

    from unigen.orchestrator.tracking import default_store_uri

    evals = _evals(evaluated_run)
    for e in evals:
        (row,) = e["suites"]
        assert row["suite"] == "t2i" and row["primary"] == "overall" and row["count"] == 8  # 4 GenEval + 4 attribute
        assert _in_unit_range(row["metrics"]) and _in_unit_range(row["baseline"])
        assert row["metrics"]["overall"] is not None and row["baseline"]["overall"] is not None
        folder = evaluated_run / "eval" / f"step-{e['step']}"
        assert json.loads((folder / "suites.json").read_text())["suites"] == e["suites"]
        assert (folder / "suites.md").is_file() and (folder / "suites" / "t2i-0.png").is_file()
    latest = record(evaluated_run)["eval"]
    assert latest["step"] == 12 and latest["suites"] == evals[-1]["suites"] and latest["val_loss"] is not None
    client = MlflowClient(default_store_uri(evaluated_run.parent))
    run_id = record(evaluated_run)["mlflow"]["run_id"]
    history = client.get_metric_history(run_id, "eval/t2i/overall")
    assert sorted((m.step, m.value) for m in history) == [(e["step"], e["suites"][0]["metrics"]["overall"])
                                                          for e in evals]
    assert [m.step for m in client.get_metric_history(run_id, "eval/t2i/overall.baseline")] != []
    assert "eval/step-12/suites.json" in {a.path for a in client.list_artifacts(run_id, "eval/step-12")}


def test_unigen_eval_scores_the_final_model_and_a_committed_checkpoint(evaluated_run, workspace, tmp_path):
    env, run_id = cli_env(evaluated_run.parent), evaluated_run.name
    out = cli(workspace, "eval", str(evaluated_run), "--suite", "t2i", "edit", "--samples", "4", "--steps", "2",
              env=env, check=True).stdout
    assert f"evaluating {run_id} step 12 (export" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("SUITE"))
    assert lines[header].split() == ["SUITE", "METRIC", "VALUE", "BASELINE"]
    assert lines[header + 1].split()[:3] == ["t2i", "overall", "*"]
    assert "note: MLflow" not in out  # the run's own store took the results

    line = _evals(evaluated_run)[-1]
    assert line["source"] == "unigen eval" and line["step"] == 12 and [r["suite"] for r in line["suites"]] == \
        ["t2i", "edit"]
    for row, count in zip(line["suites"], (8, 4)):  # t2i: 4 GenEval + 4 attribute prompts
        assert row["count"] == count and row["metrics"][row["primary"]] is not None
        assert _in_unit_range(row["metrics"]) and _in_unit_range(row["baseline"])
        assert row["baseline"].keys() == row["metrics"].keys()
    document = json.loads((evaluated_run / "eval" / "step-12" / "suites.json").read_text())
    assert document["suites"] == line["suites"] and document["step"] == 12
    latest = record(evaluated_run)["eval"]  # the same step as training's last evaluation: merged
    assert latest["step"] == 12 and latest["suites"] == line["suites"] and latest["val_loss"] is not None

    out = cli(workspace, "eval", run_id, "--step", "9", "--suite", "t2i", "--samples", "2", "--steps", "1", "--out",
              str(tmp_path / "step-9"), env=env, check=True).stdout
    assert f"evaluating {run_id} step 9 (checkpoint" in out and "run.json eval kept (it holds a later step)" in out
    assert json.loads((tmp_path / "step-9" / "suites.json").read_text())["step"] == 9
    assert record(evaluated_run)["eval"]["step"] == 12

    bad = cli(workspace, "eval", run_id, "--step", "5", env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert f"error: --step 5: run {run_id} has no checkpoint step-5 (local checkpoints: step-6, step-9, step-12)" \
        in bad.stderr
