"""MLflow lineage against a REAL ``mlflow server`` (sqlite backend) started by this module.

The training runtime is simulated on rank 0 (tests/unit/tracking/tracking_helpers.run_attempt):
stage 1 in three attempts (requeued at steps 12 and 25, resumed from the checkpoints of 10 and 20),
stage 2 initialised from stage 1, both top-level runs beside their submission's run, stage 2's export
registered as an MLflow model. Then: the `runs` and `lineage` commands, the server stopped mid-run,
headless Chromium on the MLflow UI (what users see: stage rows, the stage-1 link, the model; screenshots
in the test's tmp folder and /tmp/mlflow-ui-shots/), `unigen ui`, and a search for planted secrets in
everything that was written.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.services.browser import chromium_available, headless_chromium
from tests.services.mlflow_server import MlflowServer, listening
from tests.services.procs import find_pids, stop_pids
from tests.unit.tracking.tracking_helpers import (SOURCES, ckpt_uri, commit_sha, loss_at, make_recipe, make_run,
                                                  run_attempt)
from unigen.orchestrator.commands import lineage as lineage_cmd
from unigen.orchestrator.commands import runs as runs_cmd
from unigen.orchestrator.config.recipe import DeepSpeedSection, TrainSection
from unigen.orchestrator.deepspeed_config import build_deepspeed_config
from unigen.orchestrator.tracking import Tracker, record_export, start_parent_run
from unigen.orchestrator.tracking.payload import flatten_params

pytestmark = pytest.mark.services

EXPERIMENT = "lineage-e2e"
AWS_SECRET = "awsSECRET" + secrets.token_hex(12)
PROFILE_SECRET = "profSECRET" + secrets.token_hex(12)
HTTP_TIMEOUT_S = 2  # MLFLOW_HTTP_REQUEST_TIMEOUT for this module: a frozen server costs 2 s per try


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(f"{record.name} {record.levelname} {record.getMessage()}")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Planted secrets in the environment, short HTTP timeouts, every log line collected."""
    handler = _Collect()
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        mp.setenv("UNIGEN_S3_SECRET_ACCESS_KEY", PROFILE_SECRET)  # lands in the environment report, redacted
        mp.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", str(HTTP_TIMEOUT_S))
        mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        yield {"logs": handler.lines, "evidence": tmp_path_factory.mktemp("evidence")}
    root.removeHandler(handler)
    root.setLevel(old_level)


@pytest.fixture(scope="module")
def server(env, tmp_path_factory):
    with MlflowServer(tmp_path_factory.mktemp("mlflow")) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    from mlflow import MlflowClient

    return MlflowClient(server.uri)


def _profile(run_root: Path, uri: str) -> dict:
    # A profile names the variable that holds the S3 secret (PROFILE_SECRET, set in `env`), never the value.
    return {"name": "lineage-profile", "launcher": "local", "tracking": {"tracking_uri": uri},
            "storage": {"run_root": str(run_root), "s3": {"endpoint_url": "http://127.0.0.1:1",
                                                         "access_key_id_env": "UNIGEN_S3_ACCESS_KEY_ID",
                                                         "secret_access_key_env": "UNIGEN_S3_SECRET_ACCESS_KEY"}}}


def _planted_sources(text: str) -> list[dict]:
    """The helpers' sources, the second with ``text`` in a free-form adapter option (``notes``)."""
    return [SOURCES[0], {**SOURCES[1], "options": {"notes": text}}]


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def lineage_runs(server, run_root):
    """Stage 1 (three attempts) and stage 2 of submission `sub-e2e`, tracking to the server named by
    the profile; the parent run created up front by start_parent_run."""
    tracking = {"experiment": EXPERIMENT}
    r1 = make_recipe("e2e-pretrain", "pretrain", max_steps=30, tracking=tracking,
                     sources=_planted_sources(f"planted {AWS_SECRET} in a free-text field"))
    s1 = make_run(run_root, "e2e-pretrain-1", r1, profile=_profile(run_root, server.uri), parent="sub-e2e")
    r2 = make_recipe("e2e-instruct", "instruct", max_steps=8, tracking=tracking)
    s2 = make_run(run_root, "e2e-instruct-1", r2, profile=_profile(run_root, server.uri), parent="sub-e2e",
                  init_from={"run": "e2e-pretrain-1"})
    parent_id = start_parent_run("sub-e2e", ledgers=[s1, s2])
    assert parent_id is not None
    ds = build_deepspeed_config(TrainSection.model_validate(r1["train"]),
                                DeepSpeedSection.model_validate(r1["deepspeed"]), 2)
    t0 = time.monotonic()
    run_attempt(s1, attempt=1, job_id="1001", steps=range(1, 13), resumed_from=None, checkpoint_steps=(10,),
                end_status="requeued", deepspeed_config=ds)
    run_attempt(s1, attempt=2, job_id="1002", steps=range(11, 26), resumed_from=10, checkpoint_steps=(20,),
                end_status="requeued", deepspeed_config=ds)
    run_attempt(s1, attempt=3, job_id="1003", steps=range(21, 31), resumed_from=20, checkpoint_steps=(30,),
                end_status="completed", deepspeed_config=ds)
    # What the checkpoint manager records in run.json once step 30 is in the bucket.
    s1.update(lambda r: r["checkpoints"].update(latest_durable={"step": 30, "uri": ckpt_uri(r1, 30)}))
    export = run_root / "e2e-instruct-1" / "export"
    run_attempt(s2, attempt=1, job_id="2001", steps=range(1, 9), resumed_from=None, checkpoint_steps=(8,),
                end_status="completed")
    left = record_export(s2, export)  # `unigen export`, after training
    assert time.monotonic() - t0 < 60
    return {"s1": s1, "s2": s2, "parent": parent_id, "export": export, "export_left": left}


def _only_run(client, run_id: str):
    exp = client.get_experiment_by_name(EXPERIMENT)
    found = client.search_runs([exp.experiment_id], f"tags.`unigen.run_id` = '{run_id}'")
    assert len(found) == 1, f"{len(found)} MLflow runs for {run_id}"
    return found[0]


def test_three_attempts_are_one_mlflow_run_with_a_continuous_loss_history(lineage_runs, client):
    s1 = lineage_runs["s1"]
    record = s1.read()
    run = _only_run(client, "e2e-pretrain-1")
    assert record["mlflow"]["run_id"] == run.info.run_id and run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["unigen.attempt"] == "3" and tags["unigen.job_ids"] == "1001,1002,1003"
    assert tags["unigen.stage"] == "pretrain" and tags["profile"] == "lineage-profile"
    assert tags["recipe.sha256"] == record["recipe_sha256"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent).stdout.strip()
    assert tags["git.commit"] == head and tags["git.dirty"] in ("true", "false")
    for n, job, resumed in ((1, "1001", None), (2, "1002", "10"), (3, "1003", "20")):
        assert tags[f"unigen.attempt.{n}.job_ids"] == job
        assert tags.get(f"unigen.attempt.{n}.resumed_from_step") == resumed
    assert tags["unigen.attempt.2.replayed_steps"] == "11-12" and tags["unigen.attempt.3.replayed_steps"] == "21-25"
    history = client.get_metric_history(run.info.run_id, "loss")
    steps = [m.step for m in history]
    assert sorted(set(steps)) == list(range(1, 31))  # continuous: every step, no restart at 0
    duplicated = sorted(s for s in set(steps) if steps.count(s) > 1)
    replayed = sorted(m.step for m in client.get_metric_history(run.info.run_id, "unigen.replayed"))
    assert duplicated == replayed == [11, 12, 21, 22, 23, 24, 25]  # every repeat marked, nothing else
    assert all(m.value == pytest.approx(loss_at(m.step)) for m in history)
    assert run.data.params == flatten_params(record["recipe"])  # logged once, later attempts did not fail
    assert tags["unigen.checkpoint.durable.step"] == "30"
    assert tags["unigen.checkpoint.durable.uri"] == ckpt_uri(record["recipe"], 30)
    assert tags["unigen.checkpoint.durable.commit_sha256"] == commit_sha("e2e-pretrain-1", 30)
    files = {f.path for f in client.list_artifacts(run.info.run_id, "unigen")}
    assert {"unigen/recipe.yaml", "unigen/profile.yaml", "unigen/deepspeed.json", "unigen/checkpoints.json"} <= files
    envs = {f.path for f in client.list_artifacts(run.info.run_id, "unigen/environment")}
    assert envs == {f"unigen/environment/attempt-{n}.json" for n in (1, 2, 3)}
    logged = json.loads(Path(client.download_artifacts(run.info.run_id, "unigen/checkpoints.json")).read_text())
    assert [(c["step"], c["commit_sha256"]) for c in logged] == [(s, commit_sha("e2e-pretrain-1", s))
                                                                for s in (10, 20, 30)]


def test_stage2_links_stage1_checkpoint_inputs_and_submission(lineage_runs, client):
    one, two = lineage_runs["s1"].read(), lineage_runs["s2"].read()
    run1, run2 = _only_run(client, "e2e-pretrain-1"), _only_run(client, "e2e-instruct-1")
    assert run2.data.tags["unigen.stage1.mlflow_run_id"] == run1.info.run_id
    assert run2.data.tags["unigen.stage1.checkpoint_uri"] == ckpt_uri(one["recipe"], 30)
    assert run2.data.tags["unigen.stage1.checkpoint_step"] == "30"
    parent_id = lineage_runs["parent"]
    assert one["mlflow"]["parent_run_id"] == two["mlflow"]["parent_run_id"] == parent_id
    for run in (run1, run2):  # rows of their own, grouped by tag, not collapsed under the submission
        assert "mlflow.parentRunId" not in run.data.tags
        assert run.data.tags["unigen.submission"] == "sub-e2e"
        assert run.data.tags["unigen.submission.mlflow_run_id"] == parent_id
    assert (run1.info.run_name, run2.info.run_name) == ("pretrain-e2e-pretrain-1", "instruct-e2e-instruct-1")
    # Stage 1's checkpoint, a model input of stage 2 (search_runs leaves model inputs out: get_run).
    (model_input,) = client.get_run(run2.info.run_id).inputs.model_inputs
    checkpoint = client.get_logged_model(model_input.model_id)
    assert checkpoint.source_run_id == run1.info.run_id and checkpoint.tags["unigen.checkpoint.step"] == "30"
    parent = client.get_run(parent_id)
    assert parent.info.run_name == "submission-sub-e2e" and parent.info.status == "FINISHED"
    assert parent.data.tags["unigen.stages"] == "e2e-pretrain-1,e2e-instruct-1"
    for run in (run1, run2):
        inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
        assert set(inputs) == {"cc3m", "magicbrush"}
        cc3m = inputs["cc3m"]
        assert cc3m.dataset.source_type == "s3" and "s3://unigen-data/cc3m/" in cc3m.dataset.source
        assert {t.key: t.value for t in cc3m.tags}["unigen.task"] == "t2i"
        assert {t.key: t.value for t in cc3m.tags}["unigen.weight"] == "2.0"
        assert len(cc3m.dataset.digest) == 16
    assert lineage_runs["export_left"] == 0
    assert client.get_run(run2.info.run_id).data.tags["unigen.export.path"] == str(lineage_runs["export"])


def test_runs_and_lineage_commands_print_the_expected_rows(lineage_runs, client, run_root, capsys):
    one, two = lineage_runs["s1"].read(), lineage_runs["s2"].read()
    args = argparse.Namespace(run_root=str(run_root), experiment=EXPERIMENT, stage=None, status=None)
    assert runs_cmd.run(args) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in out[1:] if not line.startswith("note:")}
    assert rows["e2e-pretrain-1"] == ["e2e-pretrain-1", "pretrain", "completed", "30/30", f"{loss_at(30):.4g}", "-",
                                      "-", "30", ckpt_uri(one["recipe"], 30), one["mlflow"]["run_id"]]
    assert rows["e2e-instruct-1"] == ["e2e-instruct-1", "instruct", "completed", "8/8", f"{loss_at(8):.4g}", "-", "-",
                                      "8", ckpt_uri(two["recipe"], 8), two["mlflow"]["run_id"]]
    args.status = "failed"
    runs_cmd.run(args)
    assert "no runs under" in capsys.readouterr().out

    assert lineage_cmd.run(argparse.Namespace(run="e2e-pretrain-1", run_root=str(run_root))) == 0
    lines = capsys.readouterr().out.splitlines()
    labels = [line.split("  ")[0].strip() for line in lines if not line.startswith(" ")]
    assert labels == ["data sources (stage 1)", "stage-1 run", "checkpoint", "data sources (stage 2)", "stage-2 run",
                      "checkpoint", "exported model"]
    text = "\n".join(lines)
    assert (f"e2e-pretrain-1  pretrain  completed  MLflow {one['mlflow']['run_id']}  parent MLflow "
            f"{lineage_runs['parent']}") in text
    assert f"{ckpt_uri(one['recipe'], 30)}  step 30  COMMIT sha256 {commit_sha('e2e-pretrain-1', 30)}" in text
    assert f"e2e-instruct-1  instruct  completed  MLflow {two['mlflow']['run_id']}" in text
    assert "magicbrush  s3://unigen-data/edits/train.jsonl  jsonl  edit  weight 1.0" in text
    assert lines[-1] == f"exported model  {lineage_runs['export']}"


def _timed_logs(tracker: Tracker, steps) -> list[float]:
    took = []
    for step in steps:
        t = time.perf_counter()
        tracker.log_metrics(step, {"loss": loss_at(step)})
        took.append(time.perf_counter() - t)
    return took


@pytest.fixture
def outage(server):
    """The server, started again after the test whatever happens in it (the later tests need it)."""
    yield server
    if not server.healthy():
        server.kill()
        server.start()


@pytest.mark.slow
def test_mlflow_down_mid_run_training_goes_on_and_metrics_arrive_after_restart(outage, client, run_root, env,
                                                                                capsys):
    server = outage
    evidence = env["evidence"]
    tracking = {"experiment": EXPERIMENT}
    live = make_run(run_root, "outage-live-1", make_recipe("outage-live", "pretrain", max_steps=40, tracking=tracking),
                    profile=_profile(run_root, server.uri))
    tracker = Tracker.open(live, attempt=1, job_ids="3001")
    assert tracker.mlflow_run_id
    took = _timed_logs(tracker, range(1, 6))
    assert tracker.flush(30)

    server.pause()  # stalled: requests hang until their 2 s timeout
    took += _timed_logs(tracker, range(6, 16))
    t0 = time.monotonic()
    while not tracker.mlflow_down and time.monotonic() - t0 < 20:
        time.sleep(0.1)
    assert tracker.mlflow_down
    server.kill()  # and then gone (crashed while frozen): connections refused
    took += _timed_logs(tracker, range(16, 41))
    tracker.log_checkpoint(40, "s3://unigen-ckpt/outage-live/checkpoints/step-40", commit_sha("outage-live-1", 40))
    # A call that waited on the server would take at least its HTTP timeout (2 s); queueing takes micro-
    # seconds, so the bound only separates "blocked" from "queued", whatever the machine's load.
    assert max(took) < 0.75 * HTTP_TIMEOUT_S, f"a tracking call stalled training: max {max(took):.3f} s"

    # Attempts that start and end while MLflow is down: the run cannot even be created yet.
    deferred = make_run(run_root, "outage-deferred-1",
                        make_recipe("outage-deferred", "pretrain", max_steps=10, tracking=tracking),
                        profile=_profile(run_root, server.uri))
    t0 = time.monotonic()
    run_attempt(deferred, attempt=1, job_id="3101", steps=range(1, 6), resumed_from=None, checkpoint_steps=(5,),
                end_status="requeued")
    synced = make_run(run_root, "outage-sync-1",
                      make_recipe("outage-sync", "pretrain", max_steps=4, tracking={"experiment": "lineage-sync"}),
                      profile=_profile(run_root, server.uri))
    run_attempt(synced, attempt=1, job_id="3201", steps=range(1, 5), resumed_from=None, checkpoint_steps=(),
                end_status="completed")
    assert time.monotonic() - t0 < 2 * 10 + 30, "attempts stalled on a dead server"  # 10 s wait per open
    runs_cmd.run(argparse.Namespace(run_root=str(run_root), experiment=EXPERIMENT, stage=None, status=None))
    out = capsys.readouterr().out
    assert f"note: MLflow at {server.uri} not reachable" in out and "columns from run.json only" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if not line.startswith("note:")}
    assert rows["outage-deferred-1"][-1] == "(pending)"  # no MLflow run yet: its creation waits in the spool
    assert "wait in their spool (MLflow was down): `unigen runs --sync` sends them" in out
    for ledger in (live, deferred, synced):
        spool = ledger.paths.root / "tracking" / "spool.jsonl"
        assert spool.stat().st_size > 0
        shutil.copy(spool, evidence / f"{ledger.paths.root.name}-spool.jsonl")
    outage_warnings = [line for line in env["logs"] if "is not answering" in line]
    assert len([w for w in outage_warnings if "outage-live-1" in w]) == 1  # once per outage, not per metric

    server.start()
    assert tracker.flush(90), "buffered metrics not sent after the restart"
    run = client.get_run(tracker.mlflow_run_id)
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == list(range(1, 41))
    assert run.data.tags["unigen.checkpoint.durable.step"] == "40"
    assert tracker.close("completed") == 0
    assert client.get_run(run.info.run_id).info.status == "FINISHED"

    # The next attempt replays its predecessor's spool first (run creation included).
    second = run_attempt(deferred, attempt=2, job_id="3102", steps=range(6, 11), resumed_from=5,
                         checkpoint_steps=(10,), end_status="completed")
    run = _only_run(client, "outage-deferred-1")
    assert run.info.run_id == second.mlflow_run_id == deferred.read()["mlflow"]["run_id"]
    assert run.data.tags["unigen.job_ids"] == "3101,3102" and run.data.tags["unigen.attempt.1.job_ids"] == "3101"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == list(range(1, 11))

    # `unigen runs --sync` sends what a finished run left behind.
    assert runs_cmd.run(argparse.Namespace(run_root=str(run_root), experiment="lineage-sync", stage=None,
                                           status=None, sync=True)) == 0
    assert "outage-sync-1: sent " in capsys.readouterr().out
    exp = client.get_experiment_by_name("lineage-sync")
    (run,) = client.search_runs([exp.experiment_id], "tags.`unigen.run_id` = 'outage-sync-1'")
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == [1, 2, 3, 4]
    for ledger in (live, deferred, synced):
        assert not (ledger.paths.root / "tracking" / "spool.jsonl").exists()


@pytest.mark.slow
def test_headless_chromium_shows_the_run_and_its_loss(lineage_runs, server, client, tmp_path):
    missing = chromium_available()
    if missing:
        pytest.fail(f"browser test needs Chromium: {missing}")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    run = _only_run(client, "e2e-pretrain-1")
    url = f"{server.uri}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    with headless_chromium(tmp_path / "chrome") as driver:
        driver.get(url)

        def page_text(d):
            text = d.find_element(By.TAG_NAME, "body").text
            return text if "e2e-pretrain-1" in text and "loss" in text.split() else False

        text = WebDriverWait(driver, 60, poll_frequency=0.5).until(page_text)
        # The metrics table of the run's overview: the metric name followed by its latest value.
        words = text.split()
        assert words[words.index("loss") + 1] == str(loss_at(30))
        assert "cc3m" in text  # the dataset inputs are listed on the run page too


SHOTS_COPY = Path("/tmp/mlflow-ui-shots")


def _wait(driver, what, timeout_s: float = 60.0):
    """``what(driver)`` once truthy; on a timeout, a screenshot of the page (timeout.png in
    /tmp/mlflow-ui-shots/) and its text in the error."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:  # MLflow's React pages re-render as data arrives: an element found a moment ago may be gone
        return WebDriverWait(driver, timeout_s, poll_frequency=0.5,
                             ignored_exceptions=(StaleElementReferenceException,)).until(what)
    except TimeoutException:
        SHOTS_COPY.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SHOTS_COPY / "timeout.png"))
        raise AssertionError(f"timed out on {driver.current_url}; the page shows:\n{_body(driver)[:3000]}") from None


def _body(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


@pytest.mark.slow
def test_headless_chromium_shows_stage_rows_the_stage1_link_and_the_registered_model(lineage_runs, server, client,
                                                                                      tmp_path):
    """What a user sees, read from the page: the runs page `unigen ui` prints lists both stage rows by
    name with nothing expanded; stage 2's description links stage 1 and the link opens it; the Models page
    lists the export. Screenshots of each go to the tmp folder and /tmp/mlflow-ui-shots/."""
    missing = chromium_available()
    if missing:
        pytest.fail(f"browser test needs Chromium: {missing}")
    from selenium.webdriver.common.by import By

    from unigen.orchestrator.tracking.ui_view import run_page_fragment, runs_page_url

    run1, run2 = _only_run(client, "e2e-pretrain-1"), _only_run(client, "e2e-instruct-1")
    exp = run1.info.experiment_id
    assert client.get_experiment(exp).tags["mlflow.experimentKind"] == "custom_model_development"
    shots = tmp_path / "shots"
    shots.mkdir()
    with headless_chromium(tmp_path / "chrome") as driver:
        driver.set_window_size(1600, 1000)
        driver.get(runs_page_url(server.uri, exp))
        names = (run1.info.run_name, run2.info.run_name)
        text = _wait(driver, lambda d: all(n in (t := _body(d)) for n in names) and t)
        driver.save_screenshot(str(shots / "1-runs-page.png"))
        assert "submission-sub-e2e" in text  # the submission is a row beside its stages, hiding none
        assert "Traces" not in text.split("\n")[:3]  # opened on the runs, not the GenAI traces overview

        driver.get(f"{server.uri}/{run_page_fragment(exp, run2.info.run_id)}")

        def stage1_link(d):  # found again before each use: the page re-renders while its tables load
            return next((e for e in d.find_elements(
                By.XPATH, f"//a[contains(@href, '/runs/{run1.info.run_id}') and normalize-space()='{names[0]}']")
                if e.is_displayed()), False)

        # Its "Logged models" table: stage 1's checkpoint as input, the registered export as output.
        text = _wait(driver, lambda d: "Logged models (2)" in (t := _body(d)) and stage1_link(d) and t)
        href = _wait(driver, lambda d: (e := stage1_link(d)) and e.get_attribute("href"))
        assert href.endswith(run_page_fragment(exp, run1.info.run_id))
        table = text[text.index("Logged models (2)"):]
        assert table.index("Input") < table.index(f"{names[0]}-step-30") < table.index("Output") < table.index(
            "e2e-instruct")
        _wait(driver, lambda d: d.execute_script("arguments[0].scrollIntoView({block: 'start'}); return true;",
                                                 d.find_element(By.XPATH, "//*[starts-with(normalize-space(), "
                                                                          "'Logged models (2)')]")))
        driver.save_screenshot(str(shots / "2a-stage2-logged-models-in-and-out.png"))
        _wait(driver, lambda d: (e := stage1_link(d)) and d.execute_script(
            "arguments[0].scrollIntoView({block: 'center'}); return true;", e))
        driver.save_screenshot(str(shots / "2-stage2-run-with-stage1-link.png"))
        before = set(driver.window_handles)
        # MLflow renders description links with target=_blank: the run opens in a new tab
        _wait(driver, lambda d: (e := stage1_link(d)) and (e.click() or True))
        opened = _wait(driver, lambda d: set(d.window_handles) - before, 30)
        driver.switch_to.window(opened.pop())
        stage1_page = run_page_fragment(exp, run1.info.run_id)
        _wait(driver, lambda d: d.current_url.endswith(stage1_page) and names[0] in _body(d)
              and "loss" in _body(d))
        driver.save_screenshot(str(shots / "3-stage1-run-after-click.png"))

        # The experiment's Models tab: the export as a logged model of stage 2's run.
        driver.get(f"{server.uri}/#/experiments/{exp}/models?workflowType=machine_learning")
        _wait(driver, lambda d: "e2e-instruct" in _body(d) and names[1] in _body(d))
        driver.save_screenshot(str(shots / "4-experiment-models-tab.png"))
        # The model registry: the registered model, and its version naming its source run.
        driver.get(f"{server.uri}/#/models?workflowType=machine_learning")
        _wait(driver, lambda d: "e2e-instruct" in _body(d) and "Version 1" in _body(d))
        # MLflow's one-time "new Model Registry UI" pop-up covers the table: close it when it shows.
        closers = [b for b in driver.find_elements(By.XPATH, "//*[@role='dialog']//button[@aria-label='Close']")
                   if b.is_displayed()]
        if closers:
            closers[0].click()
            _wait(driver, lambda d: not [e for e in d.find_elements(By.XPATH, "//*[@role='dialog']")
                                         if e.is_displayed()], 15)
        driver.save_screenshot(str(shots / "5-registered-models.png"))
        driver.get(f"{server.uri}/#/models/e2e-instruct/versions/1?workflowType=machine_learning")
        _wait(driver, lambda d: "Source Run" in _body(d) and names[1] in _body(d))
        driver.save_screenshot(str(shots / "6-model-version-source-run.png"))
    SHOTS_COPY.mkdir(parents=True, exist_ok=True)
    for shot in shots.glob("*.png"):
        assert shot.stat().st_size > 10_000, f"{shot.name} looks blank"
        shutil.copy(shot, SHOTS_COPY / shot.name)


@pytest.mark.slow
def test_unigen_ui_serves_the_default_store_on_loopback(env, tmp_path):
    root = tmp_path / "runs"
    ledger = make_run(root, "ui-run-1", make_recipe("ui-run", "pretrain", max_steps=3))
    run_attempt(ledger, attempt=1, job_id="4001", steps=range(1, 4), resumed_from=None, checkpoint_steps=(),
                end_status="completed")  # no store named anywhere: sqlite:///<root>/mlflow.db
    code = ("import argparse, sys\nfrom unigen.orchestrator.commands.ui import run\n"
            f"sys.exit(run(argparse.Namespace(run_root={str(root)!r}, port=None)))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
                            start_new_session=True)
    try:
        line, deadline = "", time.monotonic() + 120
        while "MLflow UI: " not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        assert line.startswith("MLflow UI: http://127.0.0.1:"), f"unexpected output {line!r}; rc {proc.poll()}"
        url, page = line.split()[2].split("/#/")
        from mlflow import MlflowClient

        ui = MlflowClient(url)
        exp = ui.get_experiment_by_name("unigen-tests")
        assert page == f"experiments/{exp.experiment_id}/runs?workflowType=machine_learning"  # the runs page
        (run,) = ui.search_runs([exp.experiment_id], "tags.`unigen.run_id` = 'ui-run-1'")
        assert run.info.run_id == ledger.read()["mlflow"]["run_id"]
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(90) == 0  # the server gets 10 s to stop, then its group is killed
        assert not listening(port)
        assert find_pids(cmdline_contains=str(root)) == []  # the server went with the command
    finally:  # after a failed assertion too: the server lives in its own session, so stop it through `unigen ui`
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        stop_pids(find_pids(cmdline_contains=str(root)))  # what is left of the server we started, by pid


def test_no_planted_secret_in_any_param_tag_artifact_spool_or_log(lineage_runs, server, client, run_root, env,
                                                                   tmp_path):
    """Runs last in this module: everything the other tests wrote is searched, plus a spool written
    here for certain (an attempt tracking to a port where nothing listens)."""
    offline = make_run(run_root, "secret-offline-1",
                       make_recipe("secret-offline", "pretrain", max_steps=3,
                                   sources=_planted_sources(f"planted {AWS_SECRET}")),
                       profile=_profile(run_root, "http://127.0.0.1:9"))
    run_attempt(offline, attempt=1, job_id="5001", steps=range(1, 4), resumed_from=None, checkpoint_steps=(3,),
                end_status="requeued")
    assert (offline.paths.root / "tracking" / "spool.jsonl").stat().st_size > 0
    needles = (AWS_SECRET.encode(), PROFILE_SECRET.encode())
    seen_text = []
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            seen_text += [f"{k}={v}" for k, v in {**run.data.params, **run.data.tags}.items()]
            local = client.download_artifacts(run.info.run_id, "", str(tmp_path / run.info.run_id))
            assert Path(local).exists()
    assert any("notes" in line for line in seen_text)  # the recipe field that carried the secret is there...
    blob = "\n".join(seen_text + env["logs"]).encode()
    leaks = [n for n in needles if n in blob]
    assert not leaks, "secret in a param, tag or log line"
    for folder in (server.root, run_root, env["evidence"], tmp_path):  # db, artifacts, run.json, spools, logs
        for path in Path(folder).rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert not [n for n in needles if n in data], f"secret written to {path}"
