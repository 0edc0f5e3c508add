"""Movable run folders, piece by piece: paths stored relative to the run folder and resolved where it is now
(older absolute records included), the default MLflow store recorded relative to the run folder, and a copied
local MLflow store whose artifact locations follow it (a real sqlite store, MLflow in-process). The whole
story with a trained run, copied and the original deleted: tests/e2e/test_movable_runs.py."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from unigen.orchestrator.runs import RunPaths
from unigen.orchestrator.tracking.relocate import forget_checked, rebase_artifacts
from unigen.orchestrator.tracking.store import default_store_uri, recorded_uri, run_store_uri, run_tracking_uri


def _run_folder(root: Path, name: str = "pre-1") -> RunPaths:
    paths = RunPaths(root / name)
    (paths.root / "export").mkdir(parents=True)
    (paths.root / "eval" / "step-4").mkdir(parents=True)
    return paths


def test_paths_inside_the_run_are_stored_relative_and_others_absolute(tmp_path):
    paths = _run_folder(tmp_path / "runs")
    outside = tmp_path / "models" / "mine"
    assert paths.record_path(paths.root / "export") == "export"
    assert paths.record_path(paths.root / "eval" / "step-4") == "eval/step-4"
    assert paths.record_path(outside) == str(outside)
    # a path given through a symlink to the run folder is still inside it
    (tmp_path / "link").symlink_to(paths.root)
    assert paths.record_path(tmp_path / "link" / "export") == "export"


@pytest.mark.parametrize("stored, expect", [
    ("export", "{run}/export"),                                  # relative: inside the folder, wherever it is
    ("eval/step-4", "{run}/eval/step-4"),
    ("{orig}/pre-1/export", "{run}/export"),                     # an old absolute path into the original
    ("{orig}/pre-1/eval/step-4", "{run}/eval/step-4"),
    ("{orig}/pre-1/eval/step-9", "{orig}/pre-1/eval/step-9"),    # nothing of that name here: kept
    ("{out}/models/mine", "{out}/models/mine"),                  # outside any run folder: kept
    ("{out}/pre-1", "{out}/pre-1"),                              # a folder named like the run, nothing below
    ("{run}/export", "{run}/export"),                            # absolute inside this folder
])
def test_stored_paths_resolve_to_this_folder(tmp_path, stored, expect):
    paths = _run_folder(tmp_path / "moved")
    where = {"run": paths.root, "orig": tmp_path / "original", "out": tmp_path / "elsewhere"}
    assert paths.resolve(stored.format(**where)) == Path(expect.format(**where))
    assert paths.resolve(None) is None and paths.resolve("") is None


def test_the_default_store_is_recorded_relative_to_the_run_folder_and_follows_a_moved_root(tmp_path):
    root = tmp_path / "runs"
    run_dir = root / "pre-1"
    run_dir.mkdir(parents=True)
    stored = recorded_uri(default_store_uri(root), run_dir)
    assert stored == "sqlite:///../mlflow.db"
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    record = {"run_id": "pre-1", "mlflow": {"tracking_uri": stored}}
    assert run_store_uri(record, moved / "pre-1") == f"sqlite:///{moved.resolve() / 'mlflow.db'}"
    assert run_tracking_uri(record, None, moved) == default_store_uri(moved)
    # other stores are recorded as they are (a password masked)
    assert recorded_uri("http://u:secret@mlflow:5000", run_dir) == "http://u:***@mlflow:5000"
    assert recorded_uri(f"sqlite:///{tmp_path / 'team.db'}", run_dir) == f"sqlite:///{tmp_path / 'team.db'}"


def test_an_old_absolute_default_store_reads_as_this_roots_store_once_the_root_moved(tmp_path):
    original, moved, team = tmp_path / "runs", tmp_path / "moved", tmp_path / "team"
    for root in (original, moved, team):
        (root / "pre-1").mkdir(parents=True)
        (root / "mlflow.db").write_bytes(b"")
    shutil.rmtree(team / "pre-1")
    old = {"run_id": "pre-1", "mlflow": {"tracking_uri": f"sqlite:///{original / 'mlflow.db'}"}}
    here = f"sqlite:///{moved.resolve() / 'mlflow.db'}"
    assert run_store_uri(old, moved / "pre-1") == here          # copied: the original still holds the run
    shutil.rmtree(original)
    assert run_store_uri(old, moved / "pre-1") == here          # moved: the original is gone
    assert run_store_uri(old, original / "pre-1") == old["mlflow"]["tracking_uri"]
    # a store named on purpose elsewhere (its folder holds no such run) is kept
    named = {"run_id": "pre-1", "mlflow": {"tracking_uri": f"sqlite:///{team / 'mlflow.db'}"}}
    assert run_store_uri(named, moved / "pre-1") == named["mlflow"]["tracking_uri"]


# After the copy, in a fresh process as every unigen command is (MLflow caches a run's artifact location
# per process): rebase, then log into the copy and list what the run has.
_AFTER_COPY = """
import json, sys
from mlflow import MlflowClient
from unigen.orchestrator.tracking.relocate import rebase_artifacts
uri, run_id = sys.argv[1:]
changed = [rebase_artifacts(uri), rebase_artifacts(uri)]
client = MlflowClient(uri)
client.log_text(run_id, "two", "notes/second.txt")
run = client.get_run(run_id)
print(json.dumps({"changed": changed, "artifact_uri": run.info.artifact_uri,
                  "location": client.get_experiment(run.info.experiment_id).artifact_location,
                  "listed": sorted(a.path for a in client.list_artifacts(run_id, "notes"))}))
"""


def test_a_copied_local_store_logs_artifacts_into_the_copy_only(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from unigen.orchestrator.tracking.parent import get_or_create_experiment

    monkeypatch.chdir(tmp_path)  # MLflow's own default experiment points at ./mlruns: keep it here
    original, copy = tmp_path / "runs", tmp_path / "copy"
    original.mkdir()
    uri = default_store_uri(original)
    client = MlflowClient(uri)
    experiment = get_or_create_experiment(client, "unit", uri)
    run_id = client.create_run(experiment).info.run_id
    client.log_text(run_id, "one", "notes/first.txt")
    assert (original / "mlartifacts" / run_id / "artifacts" / "notes" / "first.txt").is_file()
    assert rebase_artifacts(uri) == 0  # never moved: nothing to change

    shutil.copytree(original, copy)
    shutil.rmtree(original)
    out = subprocess.run([sys.executable, "-c", _AFTER_COPY, default_store_uri(copy), run_id], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.splitlines()[-1])
    assert seen["changed"][0] >= 2 and seen["changed"][1] == 0  # the experiment and the run at least, once
    assert seen["artifact_uri"] == (copy / "mlartifacts" / run_id / "artifacts").resolve().as_uri()
    assert seen["location"] == (copy / "mlartifacts").resolve().as_uri()
    assert seen["listed"] == ["notes/first.txt", "notes/second.txt"]
    assert (copy / "mlartifacts" / run_id / "artifacts" / "notes" / "second.txt").read_text() == "two"
    assert not original.exists()


def test_rebase_leaves_stores_it_cannot_read_and_other_uris_alone(tmp_path):
    (tmp_path / "mlflow.db").write_bytes(b"not a database")
    forget_checked()
    assert rebase_artifacts(f"sqlite:///{tmp_path / 'mlflow.db'}") == 0
    assert rebase_artifacts(f"sqlite:///{tmp_path / 'absent.db'}") == 0 and not (tmp_path / "absent.db").exists()
    assert rebase_artifacts("http://127.0.0.1:9") == 0
