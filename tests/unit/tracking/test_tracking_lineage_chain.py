"""Lineage chains and the browsing commands from run.json files alone (no MLflow involved)."""
import argparse
import socket

import pytest

from tests.unit.tracking.tracking_helpers import make_recipe, make_run
from unigen.orchestrator.commands import lineage as lineage_cmd
from unigen.orchestrator.commands import runs as runs_cmd
from unigen.orchestrator.commands import ui as ui_cmd
from unigen.orchestrator.errors import UserError
from unigen.orchestrator.tracking.lineage import InitFrom, build_chain, parse_init_from
from unigen.orchestrator.tracking.state import add_checkpoint


def test_init_from_forms():
    assert parse_init_from(None) == InitFrom()
    assert parse_init_from("run:pre-1") == InitFrom(run="pre-1")
    assert parse_init_from("s3://b/ck/step-9") == InitFrom(uri="s3://b/ck/step-9")
    assert parse_init_from({"run": "run:pre-1", "checkpoint_uri": "s3://x", "step": "9"}) == \
        InitFrom(run="pre-1", uri="s3://x", step=9)
    assert parse_init_from({"run_id": "pre-1", "checkpoint": None, "checkpoint_path": "checkpoints/step-4",
                            "step": 4}) == InitFrom(run="pre-1", step=4, path="checkpoints/step-4")
    with pytest.raises(UserError, match="init_from"):
        parse_init_from(42)


def test_a_local_stage1_step_folder_is_found_in_the_stage1_folder_wherever_it_is(tmp_path):
    """runtime.init_from records a local checkpoint relative to the stage-1 folder (movable runs): the
    stage-1 link and the chain name that folder under the runs root as it is now."""
    root = tmp_path / "moved-runs"
    make_run(root, "pre-1", make_recipe("pre", "pretrain", max_steps=4))
    make_run(root, "sft-1", make_recipe("sft", "instruct", max_steps=2),
             init_from={"run_id": "pre-1", "checkpoint": None, "checkpoint_path": "checkpoints/step-4", "step": 4})
    chain = build_chain(root, "sft-1")
    assert chain.stages[1].started_from == {"uri": str(root / "pre-1" / "checkpoints" / "step-4"), "step": 4}
    from unigen.orchestrator.runs import find_run
    from unigen.orchestrator.tracking.lineage import stage1_link

    link = stage1_link(find_run(root, "sft-1").read(), root)
    assert (link["checkpoint_uri"], link["step"]) == (str(root / "pre-1" / "checkpoints" / "step-4"), 4)


@pytest.fixture
def family(tmp_path):
    """pre-1 -> (sft-a, sft-b) -> sft-a -> dpo-a; pre-1 logged durable checkpoints 10 and 20."""
    root = tmp_path / "runs"
    pre = make_run(root, "pre-1", make_recipe("pre", "pretrain", max_steps=20))
    add_checkpoint(pre.paths.root, {"step": 10, "uri": "s3://ck/pre/step-10", "commit_sha256": "a" * 64})
    add_checkpoint(pre.paths.root, {"step": 20, "uri": "s3://ck/pre/step-20", "commit_sha256": "b" * 64})
    make_run(root, "sft-a", make_recipe("sft", "instruct", max_steps=5),
             init_from={"run": "pre-1", "uri": "s3://ck/pre/step-10"})
    make_run(root, "sft-b", make_recipe("sft", "instruct", max_steps=5), init_from="run:pre")
    dpo = make_run(root, "dpo-a", make_recipe("dpo", "instruct", max_steps=5), init_from="run:sft-a")
    dpo.update(lambda r: r.update(export={"path": "/models/dpo-a"}))
    return root


def test_chain_follows_init_from_both_ways_and_uses_the_named_checkpoint(family):
    chain = build_chain(family, "sft-a")
    assert [s.record["run_id"] for s in chain.stages] == ["pre-1", "sft-a", "dpo-a"]
    assert chain.stages[1].started_from == {"step": 10, "uri": "s3://ck/pre/step-10", "commit_sha256": "a" * 64}
    assert chain.branches == {"pre-1": ["sft-b"]}
    via_b = build_chain(family, "sft-b")
    assert via_b.stages[1].started_from["step"] == 20  # "run:pre" means its newest durable checkpoint


def test_lineage_command_text(family, capsys):
    assert lineage_cmd.run(argparse.Namespace(run="dpo", run_root=str(family))) == 0
    out = capsys.readouterr().out
    assert "checkpoint      s3://ck/pre/step-10  step 10  COMMIT sha256 " + "a" * 64 in out
    assert "stage-3 run     dpo-a  instruct  queued  MLflow -" in out
    assert "(also started from it: sft-b)" in out
    assert out.rstrip().endswith("exported model  /models/dpo-a")
    with pytest.raises(UserError, match="no run 'nope'.*unigen runs"):
        lineage_cmd.run(argparse.Namespace(run="nope", run_root=str(family)))


def test_chain_with_a_parent_outside_the_run_root(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "sft-x", make_recipe("sft", "instruct", max_steps=5),
             init_from={"run": "gone-1", "uri": "s3://old/step-5", "step": 5})
    chain = build_chain(root, "sft-x")
    assert chain.missing_parent == "gone-1"
    assert chain.stages[0].started_from == {"uri": "s3://old/step-5", "step": 5}


def test_runs_command_without_mlflow_data(family, capsys, tmp_path):
    assert runs_cmd.run(argparse.Namespace(run_root=str(family), experiment=None, stage="pretrain", status=None)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["pre-1", "pretrain", "queued", "0/20", "-", "-", "-", "20", "s3://ck/pre/step-20", "-"]
    assert runs_cmd.run(argparse.Namespace(run_root=str(tmp_path / "empty"), experiment=None, stage=None,
                                           status=None)) == 0
    assert "no runs under" in capsys.readouterr().out
    assert runs_cmd.run(argparse.Namespace(run_root=str(family), experiment=None, stage=None, status=None,
                                           sync=True)) == 0
    assert "nothing to sync" in capsys.readouterr().out


def test_ui_points_at_a_remote_server_and_starts_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example.org:5000")
    assert ui_cmd.run(argparse.Namespace(run_root=str(tmp_path), port=None)) == 0
    assert capsys.readouterr().out.startswith("MLflow UI: http://mlflow.example.org:5000/ ")  # no run yet: root
    ledger = make_run(tmp_path, "ran-1", make_recipe("ran", "pretrain", max_steps=2))
    ledger.update(lambda r: r.update(mlflow={"tracking_uri": "http://mlflow.example.org:5000", "experiment_id": "7"}))
    assert ui_cmd.run(argparse.Namespace(run_root=str(tmp_path), port=None)) == 0
    assert capsys.readouterr().out.startswith(
        "MLflow UI: http://mlflow.example.org:5000/#/experiments/7/runs?workflowType=machine_learning ")


def test_ui_port_checks():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UserError, match=f"--port {port} is in use"):
            ui_cmd.pick_port(port)
    with pytest.raises(UserError, match="not a TCP port"):
        ui_cmd.pick_port(70000)
    assert 0 < ui_cmd.pick_port(None) < 65536
