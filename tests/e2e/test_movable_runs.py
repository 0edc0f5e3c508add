"""A runs root copied elsewhere, the original deleted, works on its own through the real CLI: status, runs,
lineage (stage 2 still starts from stage 1), export, generate and a resume, each reading and writing only
inside the copy: its own run folders, its own MLflow database and artifacts (runbooks/lineage-and-browsing.md,
"Moving or copying a runs root"). Stage 1's ledger is first turned into what older unigen wrote (absolute paths into
the original), which the copy must read as its own files too."""
from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from tests.e2e.cli import cli, cli_env, record, run_dirs, stop_run_at
from unigen.orchestrator.runs import RunLedger
from unigen.orchestrator.tracking.store import default_store_uri

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
# The cheapest real two-stage run that leaves checkpoints to resume from: one CPU rank without ZeRO, two
# steps per stage, a checkpoint every step, no mirror and no evaluation.
STEPS = ["profile.local.cpu_ranks=1", "deepspeed.zero_stage=0", "train.global_batch_size=4",
         "train.micro_batch_size=4", "train.max_steps=2", "train.warmup_steps=1", "train.log_every=1",
         "checkpoint.every=1", "checkpoint.keep_last=2", "checkpoint.uri=null", "eval.every=0"]


def _as_older_unigen_wrote(run_dir, root) -> None:
    """run.json with the absolute paths unigen recorded before run folders were movable."""
    def change(r):
        r["export"]["path"] = str(run_dir / "export")
        r["checkpoints"]["latest_local"]["path"] = str(run_dir / "checkpoints" / "step-2")
        r["mlflow"]["tracking_uri"] = default_store_uri(root)

    RunLedger(run_dir).update(change)


@pytest.fixture(scope="module")
def moved(workspace, tmp_path_factory):
    """(original root, copy root, env for the copy): both stages trained under the original, which is then
    copied to another place and deleted."""
    base = tmp_path_factory.mktemp("movable")
    original, copy = base / "runs", base / "elsewhere" / "copied-runs"
    cli(workspace, "submit", "recipes/smoke-pretrain.yaml", "recipes/smoke-instruct.yaml", "--profile", "local",
        "--wait", *STEPS, env=cli_env(original), check=True)
    _as_older_unigen_wrote(run_dirs(original)[0], original)
    shutil.copytree(original, copy, symlinks=True)
    shutil.rmtree(original)
    return original, copy, cli_env(copy)


def _files_naming(root, text: str) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.suffix in (".json", ".jsonl") and p.is_file() and text in p.read_text(errors="replace"))


def test_status_runs_and_lineage_read_the_copy(moved, workspace):
    original, copy, env = moved
    pretrain, instruct = run_dirs(copy)
    first, second = record(pretrain), record(instruct)
    table = cli(workspace, "status", env=env, check=True).stdout
    assert table.count("completed") == 2
    shown = cli(workspace, "status", first["run_id"], env=env, check=True).stdout
    assert f"export:     {pretrain / 'export'}\n" in shown  # the old absolute path, read as the copy's
    assert f"at sqlite:///{copy / 'mlflow.db'}\n" in shown
    shown = cli(workspace, "status", second["run_id"], env=env, check=True).stdout
    assert f"export:     {instruct / 'export'}\n" in shown and f"at sqlite:///{copy / 'mlflow.db'}\n" in shown
    listed = cli(workspace, "runs", env=env, check=True).stdout
    for run in (first, second):  # each row completed from the copy's MLflow database
        assert run["mlflow"]["run_id"] in listed
    assert "missing in MLflow" not in listed and "unreadable" not in listed and "not reachable" not in listed
    chain = cli(workspace, "lineage", second["run_id"], env=env, check=True).stdout
    assert f"stage-1 run     {first['run_id']}" in chain and f"stage-2 run     {second['run_id']}" in chain
    assert f"exported model  {instruct / 'export'}" in chain
    assert second["init_from"]["run_id"] == first["run_id"] and "checkpoint_path" in second["init_from"]
    assert not original.exists()


def test_export_and_generate_from_the_copy(moved, workspace):
    original, copy, env = moved
    pretrain, instruct = run_dirs(copy)
    out = cli(workspace, "export", record(pretrain)["run_id"], "--out", str(pretrain / "export"), env=env, check=True)
    assert f"-> {pretrain / 'export'}" in out.stdout
    assert record(pretrain)["export"]["path"] == "export"  # inside the run folder: stored relative to it
    picture = copy / "generated.png"
    cli(workspace, "generate", "--run", record(instruct)["run_id"], "--prompt", "a red circle on a blue background",
        "--steps", "1", "--out", str(picture), env=env, check=True)
    with Image.open(picture) as image:
        assert image.size == (64, 64)
    assert not original.exists()


def test_a_resume_in_the_copy_tracks_into_the_copys_store(moved, workspace):
    from mlflow import MlflowClient

    original, copy, env = moved
    _, instruct = run_dirs(copy)
    stop_run_at(instruct, keep_up_to=1)
    out = cli(workspace, "resume", record(instruct)["run_id"], "--wait", env=env, check=True)
    assert "completed" in out.stdout
    run = record(instruct)
    assert run["status"] == "completed" and len(run["attempts"]) == 2 and run["progress"]["step"] == 2
    assert run["export"]["path"] == "export" and run["checkpoints"]["latest_local"]["path"] == "checkpoints/step-2"
    assert run["mlflow"]["tracking_uri"] == "sqlite:///../mlflow.db"
    client = MlflowClient(default_store_uri(copy))
    mlflow_run = client.get_run(run["mlflow"]["run_id"])  # the same MLflow run, reattached
    assert mlflow_run.data.tags["unigen.attempt"] == "2"
    assert mlflow_run.info.artifact_uri == (copy / "mlartifacts" / mlflow_run.info.run_id / "artifacts").as_uri()
    environment = copy / "mlartifacts" / mlflow_run.info.run_id / "artifacts" / "unigen" / "environment"
    assert sorted(p.name for p in environment.iterdir()) == ["attempt-1.json", "attempt-2.json"]
    assert _files_naming(instruct, str(original)) == []
    assert json.loads((instruct / "init" / "lineage.json").read_text())["run_id"] == run["init_from"]["run_id"]
    assert not original.exists()
