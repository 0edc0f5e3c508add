"""The README's main job, end to end through the real CLI: both smoke stages on 2 CPU ranks with
ZeRO-3, checkpoints mirrored to the local object store, stage 2 from stage 1's final checkpoint, then
generate, chat, export and the browsing commands."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from tests.e2e.cli import cli, cli_env, record, run_dirs
from tests.smoke_shape import SHAPE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
STEPS = [*SHAPE, "train.max_steps=8", "train.warmup_steps=2", "checkpoint.every=4"]


@pytest.fixture(scope="module")
def pipeline(workspace, tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline-runs")
    env = cli_env(root)
    out = cli(workspace, "submit", "recipes/smoke-pretrain.yaml", "recipes/smoke-instruct.yaml", "--profile", "local",
              "--wait", *STEPS, env=env)
    return root, env, out


def test_both_stages_complete_and_stage2_starts_from_stage1(pipeline):
    root, _, out = pipeline
    assert out.returncode == 0, out.stderr[-3000:]
    pretrain, instruct = run_dirs(root)
    first, second = record(pretrain), record(instruct)
    assert (first["stage"], first["status"], second["stage"], second["status"]) == \
        ("pretrain", "completed", "instruct", "completed")
    assert second["recipe"]["init_from"] == f"run:{first['run_id']}"
    assert second["init_from"]["run_id"] == first["run_id"]
    commit = json.loads((pretrain / "checkpoints" / "step-8" / "COMMIT.json").read_text())
    assert commit["world_size"] == 2 and commit["metadata"]["reason"] == "final"
    log = (instruct / "logs" / "rank-0.log").read_text()
    assert "loaded init weights from" in log
    for run in (first, second):
        assert run["export"] and run["progress"]["step"] == 8 and len(run["attempts"]) == 1
    assert "completed, model exported to" in out.stdout


def test_checkpoints_are_mirrored_to_the_local_object_store(pipeline, workspace):
    """The smoke recipes' checkpoint.uri (unigen-store/checkpoints, made absolute from the submit folder):
    every committed checkpoint goes there as to S3, one folder per run id, and stage 2's lineage names
    stage 1's durable FINAL checkpoint there."""
    root, _, _ = pipeline
    pretrain, instruct = run_dirs(root)
    first, second = record(pretrain), record(instruct)
    store = workspace / "unigen-store" / "checkpoints"
    assert first["recipe"]["checkpoint"]["uri"] == str(store)
    for run_dir, run in ((pretrain, first), (instruct, second)):
        mirror = store / run["run_id"]
        assert run["checkpoints"]["latest_durable"]["uri"] == str(mirror / "step-8")
        # DeepSpeed's `latest` and its consolidation scripts beside unigen's LATEST (the tests run ZeRO-3)
        assert sorted(p.name for p in mirror.iterdir()) == ["LATEST", "latest", "step-4", "step-8",
                                                            "zero_to_fp32.py", "zero_to_torch.py"]
        local, remote = run_dir / "checkpoints" / "step-8", mirror / "step-8"
        assert (remote / "COMMIT.json").read_bytes() == (local / "COMMIT.json").read_bytes()
        assert sorted(p.name for p in remote.iterdir()) == sorted(p.name for p in local.iterdir())
    assert second["init_from"]["checkpoint"] == str(store / first["run_id"] / "step-8")  # its FINAL checkpoint


def test_generate_writes_a_png_of_the_requested_size(pipeline, tmp_path):
    root, env, _ = pipeline
    _, instruct = run_dirs(root)
    png = tmp_path / "out" / "circle.png"
    out = cli(root, "generate", "--run", record(instruct)["run_id"], "--prompt", "a red circle", "--out", str(png),
              "--steps", "3", "--height", "64", "--width", "32", "--seed", "1", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (32, 64)
    again = tmp_path / "again.png"
    cli(root, "generate", "--checkpoint", str(instruct / "export"), "--prompt", "a red circle", "--out", str(again),
        "--steps", "3", "--height", "64", "--width", "32", "--seed", "1", env=env, check=True)
    assert png.read_bytes() == again.read_bytes()  # same model, same seed: same pixels


def test_chat_answers_and_export_round_trips(pipeline, tmp_path, workspace):
    root, env, _ = pipeline
    pretrain, _ = run_dirs(root)
    image = next((workspace / "unigen-data" / "shapes").rglob("*.png"))
    out = cli(root, "chat", "--run", record(pretrain)["run_id"], "--image", str(image), "--prompt", "What is here?",
              "--max-new-tokens", "4", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    dest = tmp_path / "exported"
    cli(root, "export", record(pretrain)["run_id"], "--out", str(dest), env=env, check=True)
    from tests.e2e.cli import assert_same_tensors
    from unigen.model.export_layout import export_tensors

    assert_same_tensors(export_tensors(dest), export_tensors(pretrain / "export"))
    assert record(pretrain)["export"]["path"] == str(dest)


def test_deepspeeds_documented_command_gives_the_exports_trained_weights(pipeline):
    """`python zero_to_fp32.py . out` in a run's checkpoints folder, unchanged from DeepSpeed's docs, gives
    every trained tensor of the run's export (the frozen ones are not in checkpoints: they come from their
    source)."""
    import subprocess
    import sys

    import torch

    from unigen.model.export_layout import export_tensors

    root, _, _ = pipeline
    pretrain, _ = run_dirs(root)
    folder = pretrain / "checkpoints"
    assert (folder / "latest").read_text().strip() == "step-8"
    done = subprocess.run([sys.executable, "zero_to_fp32.py", ".", "out"], cwd=folder, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    consolidated = torch.load(folder / "out" / "pytorch_model.bin", map_location="cpu", weights_only=True)
    exported = export_tensors(pretrain / "export")
    assert consolidated and set(consolidated) <= set(exported)
    assert any(name.startswith("dit.") for name in consolidated)
    unequal = [k for k, v in consolidated.items() if not torch.equal(v.float(), exported[k].float())]
    assert not unequal, unequal[:5]


def test_status_runs_and_lineage_show_both_stages(pipeline):
    root, env, _ = pipeline
    pretrain, instruct = run_dirs(root)
    ids = [record(d)["run_id"] for d in (pretrain, instruct)]
    table = cli(root, "status", env=env, check=True).stdout
    assert all(i in table for i in ids) and table.count("completed") == 2
    one = cli(root, "status", ids[1], env=env, check=True).stdout
    assert f"init_from:  {{'run_id': '{ids[0]}'" in one and "#1: job local:" in one
    runs = cli(root, "runs", "--stage", "instruct", env=env, check=True).stdout
    assert ids[1] in runs and ids[0] not in runs
    lineage = cli(root, "lineage", ids[1], env=env, check=True).stdout
    assert lineage.index(ids[0]) < lineage.index(ids[1])
    logs = cli(root, "logs", ids[0], "--rank", "1", env=env, check=True).stdout
    assert "rank1" in logs


def test_the_final_evaluation_is_in_eval_jsonl_the_run_folder_status_and_mlflow(pipeline):
    """The smoke recipes evaluate after the last step (stage 1 also every 800): at step 8 here, on the held-out
    split, with the sample prompts and the suites."""
    from mlflow import MlflowClient

    from unigen.orchestrator.tracking.store import run_store_uri

    root, env, _ = pipeline
    for run_dir, heldout in zip(run_dirs(root), ("heldout-t2i", "heldout-magicbrush")):
        (row,) = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
        assert row["step"] == 8 and row["attempt"] == 1
        assert row["val_loss"] == row[f"val_loss/{heldout}"] and 0 < row["val_loss"] < 10
        assert row["images"] == ["eval/step-8/prompt-0.png", "eval/step-8/prompt-1.png"]
        for name in row["images"]:
            with Image.open(run_dir / name) as image:
                assert image.format == "PNG" and image.size == (64, 64)
        run = record(run_dir)
        assert run["eval"]["step"] == 8 and run["eval"]["val_loss"] == row["val_loss"]
        shown = cli(root, "status", run["run_id"], env=env, check=True).stdout
        assert f"eval:       step 8, val_loss {row['val_loss']:.4f}, images in {run_dir / 'eval' / 'step-8'}" in shown
        client = MlflowClient(run_store_uri(run, run_dir))  # run.json: relative to the run folder
        mlflow_id = run["mlflow"]["run_id"]
        assert [(m.step, m.value) for m in client.get_metric_history(mlflow_id, "val_loss")] == [(8, row["val_loss"])]
        assert sorted(a.path for a in client.list_artifacts(mlflow_id, "eval/step-8")) == \
            ["eval/step-8/prompt-0.png", "eval/step-8/prompt-1.png", "eval/step-8/prompts.json",
             "eval/step-8/suites", "eval/step-8/suites.json", "eval/step-8/suites.md"]


def test_one_rank_and_two_ranks_start_from_the_same_loss_and_evaluate_alike(workspace, tmp_path):
    """The first loss, and the held-out val_loss after the last step (a learning rate too small to move the
    weights measurably, so the two runs evaluate the same weights): one rank sums what two ranks split."""
    first, val = {}, {}
    for ranks in (1, 2):
        root = tmp_path / f"ranks-{ranks}"
        cli(workspace, "submit", "recipes/smoke-pretrain.yaml", "--profile", "local", "--wait", *SHAPE, "train.max_steps=2",
            "train.warmup_steps=1", "train.lr=1e-12", "checkpoint.every=100", f"profile.local.cpu_ranks={ranks}",
            env=cli_env(root), check=True)
        (run_dir,) = run_dirs(root)
        first[ranks] = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])["loss"]
        val[ranks] = json.loads((run_dir / "eval.jsonl").read_text())["val_loss"]
    assert first[1] == pytest.approx(first[2], rel=1e-6, abs=1e-7)
    assert val[1] == pytest.approx(val[2], rel=1e-6, abs=0)
