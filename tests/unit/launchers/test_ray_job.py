"""The submitting side of the Ray launcher without a cluster: the job's entrypoint survives hostile
paths through a shell, runtime_env, the --dry-run description, what happens when Ray cannot be
reached (submit, status, cancel), and that none of it imports ray until a client is needed."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.unit.tracking.tracking_helpers import recipe_model
from unigen.orchestrator.config.profile import Profile
from unigen.orchestrator.errors import UserError
from unigen.orchestrator.launchers.ray.launcher import LAUNCHER
from unigen.orchestrator.launchers.ray.job import DRIVER_MODULE, build_job
from unigen.orchestrator.runs import RunLedger
from tests.services.ports import free_port

HOSTILE = ["with space", "quote'single", 'quote"double', "semi;colon", "$(touch PWNED)", "back`tick`", "new\nline"]


def ray_profile(**ray):
    return Profile.model_validate({"name": "r", "launcher": "ray", "ray": {"workers": 2, "gpus_per_worker": 0, **ray}})


def test_entrypoint_round_trips_hostile_paths_through_a_shell(tmp_path):
    printer = tmp_path / "print args"
    printer.write_text("#!/bin/sh\nexec \"$0.py\" \"$@\"\n")
    (tmp_path / "print args.py").write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    for p in (printer, tmp_path / "print args.py"):
        p.chmod(0o755)
    run_dirs = [str(tmp_path / name) for name in HOSTILE]
    cfg = ray_profile(python=f"'{printer}'").ray  # a path with a space, quoted as a user would
    spec = build_job(cfg, run_dirs, ["a-run"], cwd=str(tmp_path / "cwd $(x)"))
    # The job supervisor runs the entrypoint through a shell, as this does.
    out = subprocess.run(spec.entrypoint, shell=True, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == ["-m", DRIVER_MODULE, "--job-id", "unigen-a-run",
                                      "--cwd", str(tmp_path / "cwd $(x)"), *run_dirs]
    assert not (tmp_path / "PWNED").exists()


def test_runtime_env_keeps_the_profiles_and_sets_the_stop_wait():
    cfg = ray_profile(cancel_grace_s=100, runtime_env={"working_dir": "/code", "env_vars": {"A": 1}}).ray
    spec = build_job(cfg, ["/runs/x"], ["x"], cwd="/w")
    assert spec.runtime_env == {"working_dir": "/code", "env_vars": {"A": "1", "RAY_JOB_STOP_WAIT_TIME_S": "130",
                                                                      "PYTHONUNBUFFERED": "1"}}
    assert cfg.runtime_env == {"working_dir": "/code", "env_vars": {"A": 1}}  # the profile is not changed
    assert spec.entrypoint_num_cpus == 0 and spec.metadata == {"unigen_runs": "x"}


def test_describe_shows_entrypoint_runtime_env_and_resources(tmp_path):
    profile = ray_profile(address="http://head:8265", cpus_per_worker=4, max_failures=3,
                          runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
    stage = lambda name: SimpleNamespace(recipe=SimpleNamespace(name=name))  # noqa: E731
    sub = SimpleNamespace(profile=profile, run_root=tmp_path / "runs", stages=[stage("pre"), stage("ins")])
    text = LAUNCHER.describe(sub)
    assert "one Ray Job for 2 stage(s)" in text and "address:        http://head:8265" in text
    assert f"python -m {DRIVER_MODULE} --job-id 'unigen-<pre run id>'" in text
    assert f"'{tmp_path}/runs/<pre run id>' '{tmp_path}/runs/<ins run id>'" in text
    assert '"HF_HUB_OFFLINE": "1"' in text and '"RAY_JOB_STOP_WAIT_TIME_S": "330"' in text
    assert 'workers:        2 x {"CPU": 4.0} in one placement group (strategy PACK)' in text
    assert "max_failures=3" in text and "WORLD_SIZE=2" in text


def make_run(root, name="run-a", **extra):
    profile = {"name": "r", "launcher": "ray", "ray": {"address": extra.pop("address", "auto")}}
    ledger = RunLedger.create(root, run_id=name, recipe=recipe_model("r", "pretrain", max_steps=4),
                              recipe_path="r.yaml", recipe_sha256="0", profile=Profile.model_validate(profile))
    if extra:
        ledger.update(lambda r: r.update(extra))
    return ledger


def test_unreachable_cluster_submit_fails_the_runs_with_one_clear_error(tmp_path):
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    ledgers = [make_run(tmp_path, "s1"), make_run(tmp_path, "s2")]
    sub = SimpleNamespace(profile=ray_profile(address=address))
    with pytest.raises(UserError, match=r"cannot reach the Ray cluster at ray.address='http://127\.0\.0\.1:\d+'"):
        LAUNCHER.launch(ledgers, sub, wait=False)
    for ledger in ledgers:
        record = ledger.read()
        assert record["status"] == "failed" and record["error"].startswith("not submitted: cannot reach")
        assert record["ray"]["job_id"] == "unigen-s1"


def test_status_and_cancel_without_a_reachable_job(tmp_path):
    assert LAUNCHER.scheduler_state(make_run(tmp_path, "never").read()) is None  # not submitted yet
    assert "completed: nothing to cancel" in LAUNCHER.cancel(make_run(tmp_path, "done", status="completed"))

    address = f"http://127.0.0.1:{free_port()}"
    lost = make_run(tmp_path, "lost", status="running", ray={"job_id": "unigen-lost", "address": address})
    assert LAUNCHER.scheduler_state(lost.read()) == "unreachable"
    line = LAUNCHER.cancel(lost)
    assert "cannot reach Ray" in line
    record = lost.read()
    assert record["cancel_requested"] and record["status"] == "running"  # the driver may still act on it


def test_cancel_of_a_run_whose_job_already_ended_marks_it_cancelled(tmp_path, monkeypatch):
    ledger = make_run(tmp_path, "orphan", status="running", ray={"job_id": "unigen-orphan", "address": "auto"})
    monkeypatch.setattr(LAUNCHER, "scheduler_state", lambda record: "FAILED")
    assert "marked cancelled" in LAUNCHER.cancel(ledger)
    assert ledger.read()["status"] == "cancelled"


def test_the_launcher_modules_import_no_ray_or_torch():
    code = ("import sys, unigen.orchestrator.launchers.ray.launcher, unigen.orchestrator.launchers.attempts\n"
            "print([m for m in ('ray', 'torch', 'deepspeed') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[3])
    assert out.stdout.strip() == "[]"


class RecordingClient:
    """Stands in for JobSubmissionClient where only the call's arguments matter."""

    def __init__(self, message=""):
        self.submitted = []
        self.message = message
        self.state = "PENDING"

    def get_job_status(self, submission_id):
        return self.state

    def submit_job(self, **kwargs):
        self.submitted.append(kwargs)
        return kwargs["submission_id"]

    def get_job_info(self, submission_id):
        return SimpleNamespace(message=self.message)


def test_detached_launch_submits_one_job_for_all_stages_and_records_it(tmp_path, monkeypatch, capsys):
    client = RecordingClient()
    monkeypatch.setitem(LAUNCHER._clients, "http://head:8265", client)
    ledgers = [make_run(tmp_path, "s1"), make_run(tmp_path, "s2")]
    sub = SimpleNamespace(profile=ray_profile(address="http://head:8265", cpus_per_worker=2))
    monkeypatch.chdir(tmp_path)
    assert LAUNCHER.launch(ledgers, sub, wait=False) == 0
    (job,) = client.submitted
    assert job["submission_id"] == "unigen-s1" and job["entrypoint_num_cpus"] == 0
    assert job["entrypoint"].endswith(f"--job-id unigen-s1 --cwd {tmp_path} {tmp_path}/s1 {tmp_path}/s2")
    assert job["metadata"] == {"unigen_runs": "s1 s2"}
    for ledger in ledgers:
        assert ledger.read()["ray"] == {"job_id": "unigen-s1", "address": "http://head:8265", "job_ids": ["unigen-s1"]}
    assert "ray job logs unigen-s1" in capsys.readouterr().out

    # `unigen resume` hands the run back: Ray keeps old submission ids, so the new job is numbered ...
    client.state = "FAILED"
    assert LAUNCHER.launch(ledgers[:1], sub, wait=False) == 0
    assert client.submitted[-1]["submission_id"] == "unigen-s1-2"
    assert ledgers[0].read()["ray"]["job_ids"] == ["unigen-s1", "unigen-s1-2"]
    # ... and a run whose job still runs is refused: two drivers would share its folder.
    client.state = "RUNNING"
    with pytest.raises(UserError, match="run s1 still has Ray job unigen-s1-2 RUNNING: `unigen cancel s1`"):
        LAUNCHER.launch(ledgers[:1], sub, wait=False)
    assert len(client.submitted) == 2


def test_a_job_that_ended_with_runs_unfinished_fails_them_with_rays_reason(tmp_path):
    from unigen.orchestrator.launchers.ray.launcher import _settle

    done = make_run(tmp_path, "done", status="completed")
    running = make_run(tmp_path, "running")
    running.start_attempt(job_id="unigen-done", nodes="n1")
    asked = make_run(tmp_path, "asked", status="queued", cancel_requested=True)
    _settle([done, running, asked], RecordingClient("Job entrypoint command failed with exit code 1\nmore"),
            "unigen-done", "FAILED")
    assert done.read()["status"] == "completed"
    record = running.read()
    assert record["status"] == "failed" and record["attempts"][-1]["exit_reason"] == "lost"
    assert record["error"].startswith("the Ray job unigen-done ended FAILED before this run finished "
                                      "(Job entrypoint command failed with exit code 1)")
    assert asked.read()["status"] == "cancelled"
