"""Lineage of REAL smoke runs in a real `mlflow server`: stage 1 interrupted twice (SIGTERM to one
rank -> requeue, then SIGKILL -> crash restart) is one MLflow run with three attempts and a
continuous, marked loss history; stage 2 links stage 1's run and checkpoint (tags and a link in its
description); both are top-level rows named by stage, tagged with their submission, with their data
sources as inputs; stage 2's export is a registered MLflow model of its run; `unigen runs` and
`unigen lineage` agree."""
from __future__ import annotations

import json
import secrets
import signal

import pytest

from tests.e2e.cli import (SHORT, cli, cli_env, kill_ranks, losses_by_step, metrics, rank_pids, record, run_dirs,
                           start_cli, stop, wait_for)
from tests.services.mlflow_server import MlflowServer

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.timeout(1500)]
PLANTED = "plantedSECRET" + secrets.token_hex(8)


# Checkpoints at steps 6 and 12 only: the SIGKILL lands between them, so step 6 is what attempt 3
# resumes from however slowly the machine runs.
STEPS = [o for o in SHORT if not o.startswith("checkpoint.every=")] + ["checkpoint.every=6"]


def _step(run_dir) -> int:
    rows = metrics(run_dir)
    return rows[-1]["step"] if rows else 0


def _tracked_step(run_dir, client) -> int:
    """The highest step attempt 2 has handed to tracking: in state.json (what a resumed attempt
    compares with) AND in MLflow's loss history. metrics.jsonl is written first, so a SIGKILL right
    after it could land before either; the replay marks are only asserted for steps both saw."""
    try:
        state = json.loads((run_dir / "tracking" / "state.json").read_text()).get("max_step") or 0
        run_id = record(run_dir)["mlflow"]["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    return min(state, max((m.step for m in client.get_metric_history(run_id, "loss")), default=0))


@pytest.fixture(scope="module")
def tracked(workspace, tmp_path_factory):
    from mlflow import MlflowClient

    with MlflowServer(tmp_path_factory.mktemp("mlflow")) as server:
        root = tmp_path_factory.mktemp("mlflow-runs")
        env = cli_env(root, MLFLOW_TRACKING_URI=server.uri, AWS_SECRET_ACCESS_KEY=PLANTED)
        proc = start_cli(workspace, "submit", "recipes/smoke-pretrain.yaml", "recipes/smoke-instruct.yaml", "--profile",
                         "local", "--wait", *STEPS, "profile.local.max_restarts=2", env=env, log=root / "submit.log")
        try:
            wait_for(lambda: run_dirs(root) if root.exists() else False, 120, "the run folders")
            stage1 = run_dirs(root)[0]
            wait_for(lambda: _step(stage1) >= 4, 400, "step 4")
            kill_ranks(rank_pids(stage1, 1)[1:], signal.SIGTERM)  # -> saves, requeue (attempt 2)
            wait_for(lambda: len(rank_pids(stage1, 2)) == 2, 300, "attempt 2")
            client = MlflowClient(server.uri)
            wait_for(lambda: (stage1 / "checkpoints" / "step-6" / "COMMIT.json").exists()
                     and _tracked_step(stage1, client) >= 7, 400, "step 7 in state.json and MLflow")
            kill_ranks(rank_pids(stage1, 2))  # SIGKILL after step 7: steps after step-6 are replayed
            assert proc.wait(1200) == 0, (root / "submit.log").read_text()[-3000:]
        finally:
            stop(proc)
        yield {"root": root, "env": env, "client": MlflowClient(server.uri), "dirs": run_dirs(root)}


def _mlflow_run(client, run_id):
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              f"tags.`unigen.run_id` = '{run_id}'")
    assert len(runs) == 1, f"{len(runs)} MLflow runs for {run_id}"
    return runs[0]


def test_stage1_is_one_mlflow_run_with_three_attempts_and_a_continuous_history(tracked):
    client, (stage1, _) = tracked["client"], tracked["dirs"]
    rec = record(stage1)
    assert [a["exit_reason"] for a in rec["attempts"]] == ["requeue", "crashed", "completed"]
    run = _mlflow_run(client, rec["run_id"])
    assert run.info.run_id == rec["mlflow"]["run_id"] and run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["unigen.attempt"] == "3" and tags["unigen.stage"] == "pretrain"
    assert tags["unigen.job_ids"].split(",") == list(dict.fromkeys(a["job_id"] for a in rec["attempts"]))
    history = client.get_metric_history(run.info.run_id, "loss")
    steps = [m.step for m in history]
    assert sorted(set(steps)) == list(range(1, 13))  # every step once at least, never restarting at 0
    replayed = {m.step for m in client.get_metric_history(run.info.run_id, "unigen.replayed")}
    assert tags["unigen.attempt.3.resumed_from_step"] == "6"
    first, last_replayed = map(int, tags["unigen.attempt.3.replayed_steps"].split("-"))
    # The steps attempt 2 logged after step-6 (7 at least, it was in MLflow before the kill) are
    # exactly the marked ones; every step MLflow holds twice is among them.
    assert first == 7 and last_replayed >= 7 and replayed == set(range(7, last_replayed + 1))
    assert {s for s in steps if steps.count(s) > 1} <= replayed
    assert steps.count(7) == 2  # attempt 2's value (seen in MLflow before the kill) and attempt 3's
    final = losses_by_step(stage1)
    last = {}
    for m in sorted(history, key=lambda m: m.timestamp):
        last[m.step] = m.value
    assert last == pytest.approx(final, rel=1e-6)


def test_stage2_links_stage1_and_both_are_rows_of_the_submission_with_inputs(tracked):
    client, (stage1, stage2) = tracked["client"], tracked["dirs"]
    one, two = record(stage1), record(stage2)
    run1, run2 = _mlflow_run(client, one["run_id"]), _mlflow_run(client, two["run_id"])
    assert run2.data.tags["unigen.stage1.mlflow_run_id"] == run1.info.run_id
    assert run2.data.tags["unigen.stage1.run_id"] == one["run_id"]
    assert run2.data.tags["unigen.stage1.checkpoint_uri"].endswith("step-12")
    assert f"/runs/{run1.info.run_id}?" in run2.data.tags["mlflow.note.content"]  # the link in its description
    parent = one["mlflow"]["parent_run_id"]
    for run, rec in ((run1, one), (run2, two)):  # not nested: the UI would collapse them under the submission
        assert "mlflow.parentRunId" not in run.data.tags
        assert run.data.tags["unigen.submission.mlflow_run_id"] == parent
        assert run.info.run_name == f"{rec['stage']}-{rec['run_id']}"
    assert client.get_run(parent).info.status == "FINISHED"
    (version,) = client.search_model_versions(f"name = '{two['recipe']['name']}'")
    assert version.run_id == run2.info.run_id  # the export, registered with its source run
    names = {d.dataset.name for d in run1.inputs.dataset_inputs}
    assert names == {s["name"] for s in one["recipe"]["data"]["sources"]}
    assert {d.dataset.name for d in run2.inputs.dataset_inputs} == {s["name"] for s in two["recipe"]["data"]["sources"]}


def test_runs_and_lineage_print_the_chain(tracked, workspace):
    env, (stage1, stage2) = tracked["env"], tracked["dirs"]
    one, two = record(stage1), record(stage2)
    table = cli(workspace, "runs", env=env, check=True).stdout
    for rec in (one, two):
        row = next(line for line in table.splitlines() if line.startswith(rec["run_id"]))
        assert "completed" in row and rec["mlflow"]["run_id"] in row and "12" in row
    chain = cli(workspace, "lineage", two["run_id"], env=env, check=True).stdout
    order = [chain.index(text) for text in ("shapes-t2i", one["run_id"], "step-12", two["run_id"], "export")]
    assert order == sorted(order), chain


def test_no_planted_secret_in_params_tags_or_artifacts(tracked):
    client, dirs = tracked["client"], tracked["dirs"]
    for run_dir in dirs:
        run = _mlflow_run(client, record(run_dir)["run_id"])
        assert PLANTED not in str(run.data.params) and PLANTED not in str(run.data.tags)
        for art in client.list_artifacts(run.info.run_id, "unigen") + client.list_artifacts(run.info.run_id,
                                                                                            "unigen/environment"):
            if not art.is_dir:
                assert PLANTED not in open(client.download_artifacts(run.info.run_id, art.path)).read()
    leaks = [str(p) for p in tracked["root"].rglob("*") if p.is_file() and PLANTED.encode() in p.read_bytes()]
    assert not leaks, leaks
