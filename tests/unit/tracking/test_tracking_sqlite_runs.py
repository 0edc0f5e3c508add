"""The tracker end to end on the default store (sqlite:///<run_root>/mlflow.db, MLflow in-process):
one MLflow run across attempts, replayed steps marked, stage 2 linked, the submission run created lazily
beside (not above) its stage runs, the export registered as an MLflow model,
an offline first attempt replayed by the next one. The same against a real server:
tests/integration/test_mlflow_lineage.py."""
import argparse
import json
import time
from pathlib import Path

import pytest

from tests.unit.tracking.tracking_helpers import ckpt_uri, commit_sha, loss_at, make_recipe, make_run, run_attempt
from unigen.orchestrator.commands import lineage as lineage_cmd
from unigen.orchestrator.commands import runs as runs_cmd
from unigen.orchestrator.tracking import Tracker, default_store_uri, record_export
from unigen.orchestrator.tracking.payload import flatten_params
from unigen.orchestrator.tracking.store import run_tracking_uri


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def client(run_root):
    from mlflow import MlflowClient

    return MlflowClient(default_store_uri(run_root))


@pytest.fixture(scope="module")
def two_stages(run_root):
    """Stage 1 in three attempts (requeued at 12 and 25, resumed from 10 and 20), stage 2 from it."""
    r1 = make_recipe("unit-pretrain", "pretrain", max_steps=30, tracking={"experiment": "unit"})
    s1 = make_run(run_root, "unit-pretrain-1", r1, parent="sub-unit")
    r2 = make_recipe("unit-instruct", "instruct", max_steps=8, tracking={"experiment": "unit"})
    s2 = make_run(run_root, "unit-instruct-1", r2, parent="sub-unit", init_from="run:unit-pretrain-1")
    run_attempt(s1, attempt=1, job_id="501", steps=range(1, 13), resumed_from=None, checkpoint_steps=(10,),
                end_status="requeued")
    run_attempt(s1, attempt=2, job_id="502", steps=range(11, 26), resumed_from=10, checkpoint_steps=(20,),
                end_status="requeued")
    run_attempt(s1, attempt=3, job_id="503", steps=range(21, 31), resumed_from=20, checkpoint_steps=(30,),
                end_status="completed")
    run_attempt(s2, attempt=1, job_id="601", steps=range(1, 9), resumed_from=None, checkpoint_steps=(8,),
                end_status="completed")
    export = run_root / "unit-instruct-1" / "export"
    (export / "transformer").mkdir(parents=True)
    (export / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 4096)
    record_export(s2, export)
    return s1, s2


def test_three_attempts_make_one_run_with_a_continuous_marked_history(two_stages, client, run_root):
    s1, _ = two_stages
    record = s1.read()
    assert record["mlflow"]["tracking_uri"] == "sqlite:///../mlflow.db"  # the runs root's store, movable with it
    assert run_tracking_uri(record, None, run_root) == default_store_uri(run_root)
    found = client.search_runs([record["mlflow"]["experiment_id"]], "tags.`unigen.run_id` = 'unit-pretrain-1'")
    assert len(found) == 1
    run = found[0]
    assert run.info.run_id == record["mlflow"]["run_id"] and run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["unigen.attempt"] == "3" and tags["unigen.job_ids"] == "501,502,503"
    assert [tags[f"unigen.attempt.{n}.job_ids"] for n in (1, 2, 3)] == ["501", "502", "503"]
    assert tags["unigen.attempt.2.replayed_steps"] == "11-12" and tags["unigen.attempt.3.replayed_steps"] == "21-25"
    history = client.get_metric_history(run.info.run_id, "loss")
    steps = [m.step for m in history]
    assert set(steps) == set(range(1, 31))
    assert sorted(s for s in set(steps) if steps.count(s) > 1) == [11, 12, 21, 22, 23, 24, 25]
    assert all(m.value == pytest.approx(loss_at(m.step)) for m in history)
    replayed = client.get_metric_history(run.info.run_id, "unigen.replayed")
    assert sorted((m.step, m.value) for m in replayed) == [(s, 2.0) for s in (11, 12)] + [(s, 3.0) for s in range(21, 26)]
    assert run.data.params == flatten_params(record["recipe"])
    assert tags["unigen.checkpoint.durable.step"] == "30"
    assert tags["unigen.checkpoint.durable.commit_sha256"] == commit_sha("unit-pretrain-1", 30)
    files = {f.path for f in client.list_artifacts(run.info.run_id, "unigen")}
    assert {"unigen/recipe.yaml", "unigen/profile.yaml", "unigen/checkpoints.json", "unigen/environment"} <= files
    assert (run_root / "mlartifacts").is_dir()


def test_stage2_links_stage1_and_both_are_top_level_rows_of_a_lazily_created_submission(two_stages, client):
    s1, s2 = two_stages
    one, two = s1.read(), s2.read()
    run2 = client.get_run(two["mlflow"]["run_id"])
    assert run2.data.tags["unigen.stage1.mlflow_run_id"] == one["mlflow"]["run_id"]
    assert run2.data.tags["unigen.stage1.run_id"] == "unit-pretrain-1"
    assert run2.data.tags["unigen.stage1.checkpoint_uri"] == ckpt_uri(one["recipe"], 30)
    assert run2.data.tags["unigen.export.path"].endswith("unit-instruct-1/export")
    parent_id = one["mlflow"]["parent_run_id"]
    assert parent_id and parent_id == two["mlflow"]["parent_run_id"]
    run1 = client.get_run(one["mlflow"]["run_id"])
    for run in (run1, run2):  # not nested: the UI would collapse them under the submission's row
        assert "mlflow.parentRunId" not in run.data.tags
        assert run.data.tags["unigen.submission"] == "sub-unit"
        assert run.data.tags["unigen.submission.mlflow_run_id"] == parent_id
    assert (run1.info.run_name, run2.info.run_name) == ("pretrain-unit-pretrain-1", "instruct-unit-instruct-1")
    note = run2.data.tags["mlflow.note.content"]
    exp = one["mlflow"]["experiment_id"]
    page = f"#/experiments/{exp}/runs/{run1.info.run_id}?workflowType=machine_learning"
    assert f"[pretrain-unit-pretrain-1]({page})" in note
    assert "step 30" in note and ckpt_uri(one["recipe"], 30) in note
    assert client.get_experiment(exp).tags["mlflow.experimentKind"] == "custom_model_development"
    (model_input,) = run2.inputs.model_inputs  # stage 1's checkpoint, a model of the stage-1 run
    ckpt = client.get_logged_model(model_input.model_id)
    assert ckpt.source_run_id == run1.info.run_id and ckpt.name == "pretrain-unit-pretrain-1-step-30"
    assert ckpt.tags["unigen.checkpoint.uri"] == ckpt_uri(one["recipe"], 30)
    parent = client.get_run(parent_id)
    assert parent.info.run_name == "submission-sub-unit"
    assert parent.data.tags["unigen.stages"] == "unit-pretrain-1,unit-instruct-1"
    assert parent.info.status == "FINISHED"
    names = sorted((d.dataset.name, d.dataset.source_type) for d in run2.inputs.dataset_inputs)
    assert names == [("cc3m", "s3"), ("magicbrush", "s3")]


def test_the_export_is_a_registered_model_of_stage_2_that_copies_no_weights(two_stages, client, run_root, tmp_path):
    _, s2 = two_stages
    two = s2.read()
    run_id, export = two["mlflow"]["run_id"], run_root / "unit-instruct-1" / "export"
    (version,) = client.search_model_versions("name = 'unit-instruct'")
    model = client.get_logged_model(version.tags["unigen.model_id"])
    assert version.run_id == run_id and version.source == model.artifact_location
    assert model.source_run_id == run_id and model.status == "READY"
    assert model.tags["unigen.export.path"] == str(export)
    tags = client.get_run(run_id).data.tags
    assert tags["unigen.export.model_id"] == model.model_id and tags["unigen.export.registered"] == "unit-instruct/1"
    local = Path(client.download_artifacts(run_id, "", str(tmp_path / "run")))  # sanity: the run's own artifacts
    assert local.is_dir()
    from mlflow.artifacts import download_artifacts

    got = Path(download_artifacts(artifact_uri=model.artifact_location, dst_path=str(tmp_path / "model")))
    files = sorted(p.relative_to(got).as_posix() for p in got.rglob("*") if p.is_file())
    assert files == ["unigen-export.json"]  # a reference, not a copy of the weights
    manifest = json.loads((got / "unigen-export.json").read_text())
    assert manifest["files"] == [{"file": "transformer/diffusion_pytorch_model.safetensors", "bytes": 4096}]
    # Replaying the export (a second `unigen export` of the same folder) adds no model and no version.
    record_export(s2, export)
    assert len(client.search_model_versions("name = 'unit-instruct'")) == 1


def test_runs_command_prints_a_row_per_run(two_stages, run_root, capsys):
    s1, s2 = two_stages
    args = argparse.Namespace(run_root=str(run_root), experiment=None, stage=None, status=None)
    assert runs_cmd.run(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["RUN", "STAGE", "STATUS", "STEP", "LOSS", "VAL", "LOSS", "EVAL", "DURABLE",
                                "CHECKPOINT", "MLFLOW", "RUN"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["unit-pretrain-1"] == ["unit-pretrain-1", "pretrain", "completed", "30/30", f"{loss_at(30):.4g}",
                                       "-", "-", "30", ckpt_uri(s1.read()["recipe"], 30), s1.read()["mlflow"]["run_id"]]
    assert rows["unit-instruct-1"] == ["unit-instruct-1", "instruct", "completed", "8/8", f"{loss_at(8):.4g}", "-",
                                       "-", "8", ckpt_uri(s2.read()["recipe"], 8), s2.read()["mlflow"]["run_id"]]
    # run.json's progress lags (the runtime writes it now and then): MLflow's latest loss wins.
    s1.set_progress(loss=9.99)
    try:
        runs_cmd.run(args)
        rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
        assert rows["unit-pretrain-1"][4] == f"{loss_at(30):.4g}"
    finally:
        s1.set_progress(loss=loss_at(30))
    args.stage = "instruct"
    runs_cmd.run(args)
    out = capsys.readouterr().out
    assert "unit-instruct-1" in out and "unit-pretrain-1" not in out
    args.stage, args.experiment = None, "no-such-experiment"
    runs_cmd.run(args)
    assert "no runs under" in capsys.readouterr().out


def test_lineage_command_prints_the_chain(two_stages, run_root, capsys):
    s1, s2 = two_stages
    one, two = s1.read(), s2.read()
    assert lineage_cmd.run(argparse.Namespace(run="unit-instruct", run_root=str(run_root))) == 0
    lines = capsys.readouterr().out.splitlines()
    labels = [line.split("  ")[0].strip() for line in lines if not line.startswith(" ")]
    assert labels == ["data sources (stage 1)", "stage-1 run", "checkpoint", "data sources (stage 2)", "stage-2 run",
                      "checkpoint", "exported model"]
    text = "\n".join(lines)
    assert f"unit-pretrain-1  pretrain  completed  MLflow {one['mlflow']['run_id']}" in text
    assert f"{ckpt_uri(one['recipe'], 30)}  step 30  COMMIT sha256 {commit_sha('unit-pretrain-1', 30)}" in text
    assert f"unit-instruct-1  instruct  completed  MLflow {two['mlflow']['run_id']}" in text
    assert "cc3m  s3://unigen-data/cc3m/{00000..00009}.tar  webdataset  t2i  weight 2.0" in text
    assert lines[-1].endswith("unit-instruct-1/export")


def test_an_offline_attempt_is_replayed_by_the_next_one(run_root, client, caplog):
    recipe = make_recipe("unit-offline", "pretrain", max_steps=10, tracking={"experiment": "unit"})
    ledger = make_run(run_root, "unit-offline-1", recipe)
    t = time.monotonic()
    first = run_attempt(ledger, attempt=1, job_id="701", steps=range(1, 7), resumed_from=None, checkpoint_steps=(5,),
                        end_status="requeued", tracking_uri="http://127.0.0.1:9")  # nothing listens there
    assert time.monotonic() - t < 8, "a dead server stalled the attempt"
    assert first.mlflow_run_id is None and ledger.read()["mlflow"]["run_id"] is None
    assert (ledger.paths.root / "tracking" / "spool.jsonl").stat().st_size > 0
    second = run_attempt(ledger, attempt=2, job_id="702", steps=range(6, 11), resumed_from=5, checkpoint_steps=(10,),
                         end_status="completed")
    run = client.get_run(second.mlflow_run_id)
    assert run.data.tags["unigen.attempt.1.job_ids"] == "701" and run.data.tags["unigen.attempt"] == "2"
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss"))
    assert steps == [1, 2, 3, 4, 5, 6, 6, 7, 8, 9, 10]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "unigen.replayed")] == [6]
    assert not (ledger.paths.root / "tracking" / "spool.jsonl").exists()


def test_reattach_by_the_id_from_checkpoint_metadata(run_root, client):
    recipe = make_recipe("unit-restored", "pretrain", max_steps=4, tracking={"experiment": "unit"})
    ledger = make_run(run_root, "unit-restored-1", recipe)
    first = run_attempt(ledger, attempt=1, job_id="801", steps=range(1, 3), resumed_from=None, checkpoint_steps=(),
                        end_status="requeued")
    mlflow_id = first.mlflow_run_id
    ledger.update(lambda r: r["mlflow"].update(run_id=None))  # run.json restored from before the first attempt
    run_attempt(ledger, attempt=2, job_id="802", steps=range(3, 5), resumed_from=2, checkpoint_steps=(),
                end_status="completed", mlflow_run_id=mlflow_id)
    assert ledger.read()["mlflow"]["run_id"] == mlflow_id
    found = client.search_runs([ledger.read()["mlflow"]["experiment_id"]], "tags.`unigen.run_id` = 'unit-restored-1'")
    assert [r.info.run_id for r in found] == [mlflow_id]
    assert sorted(m.step for m in client.get_metric_history(mlflow_id, "loss")) == [1, 2, 3, 4]


def test_tracker_calls_after_close_are_ignored_not_raised(run_root, caplog):
    recipe = make_recipe("unit-closed", "pretrain", max_steps=2, tracking={"experiment": "unit"})
    ledger = make_run(run_root, "unit-closed-1", recipe)
    tracker = Tracker.open(ledger, attempt=1, job_ids="901")
    assert tracker.close("completed") == 0
    tracker.log_metrics(3, {"loss": 1.0})
    tracker.log_metrics(4, {"loss": 1.0})
    assert caplog.text.count("after close()") == 1
    with pytest.raises(ValueError, match="attempt must be >= 1"):
        Tracker.open(ledger, attempt=0)


class _RecordingSender:
    """A Sender stand-in that notes what state.json said when each metrics op was handed over."""

    def __init__(self, state_path):
        self.state_path, self.seen, self.in_outage = state_path, [], False

    def submit(self, op):
        if op["op"] == "metrics":
            import json

            self.seen.append((op["metrics"][0][3], json.loads(self.state_path.read_text())["max_step"]))

    def close(self, timeout_s):
        return 0


def test_state_json_knows_every_step_before_mlflow_is_sent_it(run_root):
    # A SIGKILL may land between the two: MLflow holding a step state.json lacks would make the
    # next attempt log it again unmarked.
    ledger = make_run(run_root, "unit-order-1", make_recipe("unit-order", "pretrain", max_steps=5))
    sender = _RecordingSender(ledger.paths.root / "tracking" / "state.json")
    tracker = Tracker(ledger, sender, attempt=1, experiment="unit")
    for step in (1, 2, 3):
        tracker.log_metrics(step, {"loss": loss_at(step)})
    tracker._closed = True  # nothing else to send; keeps the atexit hook quiet
    assert sender.seen == [(1, 1), (2, 2), (3, 3)]


def test_evaluation_images_go_up_as_artifacts_and_a_vanished_folder_blocks_nothing(run_root, client, tmp_path,
                                                                                    capsys):
    from tests.unit.tracking.tracking_helpers import make_recipe, make_run

    ledger = make_run(run_root, "unit-eval-1", make_recipe("unit-eval", "pretrain", max_steps=4,
                                                           tracking={"experiment": "unit"}))
    ledger.start_attempt(job_id="701", nodes="localhost")
    tracker = Tracker.open(ledger, attempt=1, job_ids=["701"])
    shown = ledger.paths.root / "eval" / "step-2"
    shown.mkdir(parents=True)
    (shown / "prompt-0.png").write_bytes(b"\x89PNG fake")
    (shown / "prompts.json").write_text("[]")
    gone = tmp_path / "gone"
    tracker.log_metrics(2, {"val_loss": 0.5})
    tracker.log_artifacts(gone, "eval/step-1")  # never existed: dropped with a warning, not retried forever
    tracker.log_artifacts(shown, "eval/step-2")
    tracker.log_metrics(4, {"val_loss": 0.25})
    assert tracker.close("completed") == 0
    run_id = ledger.read()["mlflow"]["run_id"]
    assert [a.path for a in client.list_artifacts(run_id, "eval")] == ["eval/step-2"]
    assert sorted(a.path for a in client.list_artifacts(run_id, "eval/step-2")) == \
        ["eval/step-2/prompt-0.png", "eval/step-2/prompts.json"]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val_loss")] == [(2, 0.5), (4, 0.25)]
    ledger.update(lambda r: r.__setitem__("eval", {"step": 2, "val_loss": 0.5}))  # run.json lags: MLflow's wins
    assert runs_cmd.run(argparse.Namespace(run_root=str(run_root), experiment=None, stage=None, status=None)) == 0
    row = next(line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("unit-eval-1"))
    assert row[4:6] == ["-", "0.25"]  # LOSS (never logged), VAL LOSS
