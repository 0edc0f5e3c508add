"""run.json: atomic, locked updates; attempts; lookup by id/prefix; secrets never recorded."""
import json
import multiprocessing as mp

import pytest

from tests.unit.tracking.tracking_helpers import recipe_model
from unigen.orchestrator.config.profile import Profile
from unigen.orchestrator.config.recorded import recorded_profile
from unigen.orchestrator.errors import UserError
from unigen.orchestrator.runs import RunLedger, find_run, list_runs, new_run_id, safe_name


def _make(tmp_path, run_id="smoke-20261125-000000-abcd", **kw):
    # A data source option that looks like a credential: run.json must never hold its value.
    sources = [{"uri": "s3://bucket/t2i/{0..3}.tar", "format": "webdataset", "task": "t2i",
                "options": {"secret_key": "hunter2-hunter2"}}]
    return RunLedger.create(
        tmp_path, run_id=run_id, recipe=recipe_model("smoke", "pretrain", max_steps=10, sources=sources),
        recipe_path="recipes/smoke.yaml", recipe_sha256="0" * 64,
        profile=Profile.model_validate({"name": "local", "launcher": "local"}), **kw)


def test_create_writes_a_queued_record_without_secrets(tmp_path):
    ledger = _make(tmp_path)
    rec = ledger.read()
    assert rec["status"] == "queued" and rec["attempts"] == []
    # What the typed recipe and profile say, recorded where the CLI and the launchers read them.
    assert rec["progress"]["max_steps"] == 10 and rec["stage"] == "pretrain" and rec["init_from"] is None
    assert rec["launcher"] == "local" and rec["profile_name"] == "local"
    assert recorded_profile(rec) == Profile.model_validate({"name": "local", "launcher": "local"})  # round trip
    text = ledger.paths.ledger.read_text()
    assert "hunter2" not in text and rec["recipe"]["data"]["sources"][0]["options"]["secret_key"] == "***"
    assert (ledger.paths.root / "logs").is_dir() and (ledger.paths.root / "checkpoints").is_dir()


def test_create_refuses_an_existing_folder(tmp_path):
    _make(tmp_path)
    with pytest.raises(UserError, match="already exists: pick another --name"):
        _make(tmp_path)


def test_attempts_are_numbered_and_closed(tmp_path):
    ledger = _make(tmp_path)
    assert ledger.start_attempt(job_id="11") == 1
    ledger.end_attempt(exit_reason="preempted", exit_code=75, status="requeued")
    assert ledger.start_attempt(job_id="11") == 2
    ledger.end_attempt(exit_reason="completed", exit_code=0, status="completed")
    rec = ledger.read()
    assert [a["exit_reason"] for a in rec["attempts"]] == ["preempted", "completed"]
    assert rec["status"] == "completed" and all(a["ended_at"] for a in rec["attempts"])
    with pytest.raises(ValueError, match="unknown exit reason 'boom'"):
        ledger.end_attempt(exit_reason="boom", exit_code=1, status="failed")


def _bump(run_dir, n):
    ledger = RunLedger(run_dir)
    for _ in range(n):
        ledger.update(lambda r: r["progress"].__setitem__("step", r["progress"]["step"] + 1))


def test_concurrent_updates_are_not_lost(tmp_path):
    ledger = _make(tmp_path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_bump, args=(ledger.paths.root, 25)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert ledger.read()["progress"]["step"] == 75
    json.loads((ledger.paths.root / "run.json.bak").read_text())  # the previous version stays valid


def _watch_ledger(path, ready, stop, found):
    """Look for run.json as fast as possible until told to stop; count the times it was missing."""
    import os
    seen = missing = 0
    ready.set()
    while not stop.is_set():
        try:
            os.stat(path)
            seen += 1
        except FileNotFoundError:
            missing += 1
    found.put((seen, missing))


def test_run_json_never_disappears_while_it_is_rewritten(tmp_path):
    # Readers (`unigen status`, the launchers' progress polls) take no lock, so between a write's
    # renames there must be no moment without run.json. CI once read it in such a gap.
    ledger = _make(tmp_path)
    ctx = mp.get_context("spawn")
    ready, stop, found = ctx.Event(), ctx.Event(), ctx.Queue()
    watcher = ctx.Process(target=_watch_ledger, args=(str(ledger.paths.ledger), ready, stop, found))
    watcher.start()
    assert ready.wait(60), "the watcher process did not start"
    try:
        for step in range(400):
            ledger.update(lambda r: r["progress"].__setitem__("step", step))
    finally:
        stop.set()
    seen, missing = found.get(timeout=60)
    watcher.join(60)
    assert seen > 0 and missing == 0, f"run.json was missing {missing} times out of {seen + missing} looks"
    assert json.loads((ledger.paths.root / "run.json.bak").read_text())["progress"]["step"] == 398
    assert not (ledger.paths.root / ".run.json.bak.tmp").exists()


def test_find_by_id_prefix_and_path(tmp_path):
    a = _make(tmp_path, run_id="alpha-20261125-000000-0001")
    _make(tmp_path, run_id="alpha-20261125-000000-0002")
    assert find_run(tmp_path, "alpha-20261125-000000-0001").paths.root == a.paths.root
    assert find_run(tmp_path, str(a.paths.root)).paths.root == a.paths.root
    with pytest.raises(UserError, match="ambiguous"):
        find_run(tmp_path, "alpha")
    with pytest.raises(UserError, match="no run 'beta'"):
        find_run(tmp_path, "beta")
    assert [r["run_id"] for r in list_runs(tmp_path)] == sorted(r["run_id"] for r in list_runs(tmp_path))


def test_run_ids_are_shell_and_path_safe():
    rid = new_run_id("my run; rm -rf $(x)\n'q'")
    assert all(c.isalnum() or c in "._-" for c in rid)
    assert safe_name("...") == "run"
