"""`unigen eval RUN` in-process on a run folder with a tiny exported model and a real MLflow store (sqlite):
the table, the step's files, eval.jsonl, run.json (merged by suite at one step), MLflow metrics and
artifacts, `unigen runs` / `unigen status`, exit 2 for bad input, and an unreachable MLflow spooled."""
from __future__ import annotations

import json
import math
import re
import shutil
import socket

import pytest

from tests.unit.model.model_helpers import tiny_pipeline
from tests.unit.tracking.tracking_helpers import make_recipe, make_run, run_attempt
from unigen.orchestrator import cli
from unigen.orchestrator.tracking import default_store_uri
from unigen.orchestrator.tracking.spool import Spool, spool_path

EVAL = {"suites": ["t2i"], "suite_samples": 2, "num_inference_steps": 1}


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def finished_run(run_root):
    """A completed 4-step run tracked in the run root's sqlite store, its export a tiny model of step 4."""
    ledger = make_run(run_root, "unit-eval-1", make_recipe("unit-eval", "pretrain", max_steps=4,
                                                            tracking={"experiment": "unit"}, eval=EVAL))
    run_attempt(ledger, attempt=1, job_id="1", steps=range(1, 5), resumed_from=None, checkpoint_steps=(),
                end_status="completed")
    tiny_pipeline(seed=5).save_pretrained(ledger.paths.export)
    (ledger.paths.export / "unigen_export.json").write_text(json.dumps({"run_id": "unit-eval-1", "step": 4}))
    return ledger


def _in_unit_range(metrics: dict) -> bool:
    """Every score is a fraction; the t2i suite's flow losses and prompt_use (1 - their ratio, below 0 for a
    model that does better with the wrong caption) are not scores."""
    not_scores = ("loss_matched", "loss_swapped", "prompt_use")
    return all(v is None or 0.0 <= v <= 1.0 for k, v in metrics.items() if k not in not_scores)


def test_eval_prints_the_table_and_writes_files_eval_jsonl_run_json_and_mlflow(finished_run, run_root, capsys):
    from mlflow import MlflowClient

    run_dir = finished_run.paths.root
    assert cli.main(["eval", str(run_dir), "--suite", "t2i", "edit", "--samples", "2", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert f"evaluating unit-eval-1 step 4 (export {run_dir / 'export'}) on t2i, edit: 2 cases each" in out
    assert re.search(r"^eval t2i: overall \d\.\d{3} \(baseline", out, re.M)  # a progress line per suite
    assert re.search(r"^eval edit: success \d\.\d{3} \(baseline", out, re.M)
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("SUITE"))
    assert lines[header].split() == ["SUITE", "METRIC", "VALUE", "BASELINE"]
    assert lines[header + 1].split()[:3] == ["t2i", "overall", "*"]  # the primary metric first, marked
    assert any(line.split()[:3] == ["edit", "success", "*"] for line in lines[header:])

    folder = run_dir / "eval" / "step-4"
    document = json.loads((folder / "suites.json").read_text())
    rows = document["suites"]
    assert [r["suite"] for r in rows] == ["t2i", "edit"] and [r["count"] for r in rows] == [4, 2]  # t2i: 2 GenEval + 2 attribute prompts
    assert document["settings"] == {"samples": 2, "seed": 0, "num_inference_steps": 1, "guidance_scale": 4.5,
                                    "image_guidance_scale": 1.5}
    for row in rows:
        assert _in_unit_range(row["metrics"]) and _in_unit_range(row["baseline"])
        assert row["baseline"].keys() >= {row["primary"]}
    assert "| t2i | **overall** |" in (folder / "suites.md").read_text()
    assert (folder / "suites" / "t2i-0.png").is_file() and (folder / "suites" / "edit-1.png").is_file()

    line = json.loads((run_dir / "eval.jsonl").read_text().splitlines()[-1])
    assert line["source"] == "unigen eval" and line["step"] == 4 and line["suites"] == rows
    assert line["model"] == "export" and line["folder"] == "eval/step-4"  # inside the run: relative to it
    record = finished_run.read()
    assert record["eval"]["step"] == 4 and record["eval"]["suites"] == rows

    client = MlflowClient(default_store_uri(run_root))
    run_id = record["mlflow"]["run_id"]
    overall = client.get_metric_history(run_id, "eval/t2i/overall")
    assert [(m.step, m.value) for m in overall] == [(4, rows[0]["metrics"]["overall"])]
    baseline = client.get_metric_history(run_id, "eval/edit/success.baseline")
    assert [(m.step, m.value) for m in baseline] == [(4, rows[1]["baseline"]["success"])]
    assert sorted(a.path for a in client.list_artifacts(run_id, "eval/step-4")) == \
        ["eval/step-4/suites", "eval/step-4/suites.json", "eval/step-4/suites.md"]
    assert "eval/step-4/suites/t2i-0.png" in {a.path for a in client.list_artifacts(run_id, "eval/step-4/suites")}


def test_recipe_defaults_another_out_folder_and_where_users_look(finished_run, run_root, tmp_path, capsys):
    run_dir = finished_run.paths.root
    assert cli.main(["eval", str(run_dir), "--out", str(tmp_path / "o")]) == 0  # eval.suites, its samples and steps
    document = json.loads((tmp_path / "o" / "suites.json").read_text())
    assert [r["suite"] for r in document["suites"]] == ["t2i"]
    assert document["settings"]["samples"] == 2 and document["settings"]["num_inference_steps"] == 1
    held = finished_run.read()["eval"]  # the same step: t2i replaced, the earlier edit kept
    assert [r["suite"] for r in held["suites"]] == ["t2i", "edit"] and held["suites"][0] == document["suites"][0]
    capsys.readouterr()

    assert cli.main(["runs", "--run-root", str(run_root)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[5:8] == ["VAL", "LOSS", "EVAL"]
    overall = held["suites"][0]["metrics"]["overall"]
    assert f"  t2i {overall:.2f}  " in next(line for line in table if line.startswith("unit-eval-1"))

    assert cli.main(["status", str(run_dir)]) == 0
    shown = capsys.readouterr().out
    assert re.search(rf"^ +t2i: overall {overall:.3f} \(baseline \d\.\d{{3}}\), 4 cases$", shown, re.M)
    assert re.search(r"^ +edit: success \d\.\d{3} \(baseline \d\.\d{3}\), 2 cases$", shown, re.M)


@pytest.mark.parametrize("argv, message", [
    (["no-such-run"], r"^error: no run 'no-such-run' under "),
    (["unit-eval-1", "--suite", "t2i", "geneval"], r"^error: --suite: unknown evaluation suite 'geneval': choose "
     r"from t2i, edit, edit_multiturn, multi_image, interleaved, depth, normal, segmentation, pose, grounding, "
     r"understanding$"),
    (["unit-eval-1", "--step", "3"], r"^error: --step 3: run unit-eval-1 has no checkpoint step-3 \(local "
     r"checkpoints: none\); pick one of those, or leave --step out for the final model$"),
    (["unit-eval-1", "--samples", "0"], r"^error: --samples 0: give at least 1 case per suite$"),
    (["unit-eval-1", "--guidance", "0"], r"^error: --guidance 0.0: give a scale above 0 \(1: no guidance\)$"),
])
def test_bad_input_exits_2_with_one_error_line_and_writes_nothing(finished_run, run_root, argv, message, capsys):
    jsonl = finished_run.paths.root / "eval.jsonl"
    before = jsonl.read_text() if jsonl.exists() else None
    assert cli.main(["eval", *argv, "--run-root", str(run_root)]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err, re.M), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert (jsonl.read_text() if jsonl.exists() else None) == before


def test_an_unreachable_mlflow_is_spooled_and_the_command_still_succeeds(finished_run, run_root, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ledger = make_run(run_root, "unit-eval-2", make_recipe("unit-eval", "pretrain", max_steps=4, eval=EVAL))
    ledger.update(lambda r: r.update(mlflow={"run_id": "0" * 32, "tracking_uri": f"http://127.0.0.1:{port}"},
                                     progress={"step": 4, "max_steps": 4}))
    shutil.copytree(finished_run.paths.export, ledger.paths.export)
    assert cli.main(["eval", str(ledger.paths.root), "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^note: MLflow did not take the results: \d+ tracking call\(s\) wait in the run's spool; "
                     r"`unigen runs --sync` sends them$", out, re.M)
    assert Spool(spool_path(ledger.paths.root)).pending() >= 1
    row = ledger.read()["eval"]["suites"][0]
    assert row["suite"] == "t2i" and not math.isnan(row["metrics"]["overall"])


def test_suites_are_given_as_one_list_or_repeated():
    _, args = cli.parse_args(["eval", "r", "--suite", "t2i", "edit", "--suite", "depth"])
    assert args.suite == ["t2i", "edit", "depth"] and args.step is None and args.samples is None
