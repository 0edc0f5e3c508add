"""A real smoke run whose checkpoints sync to a real S3 server (SeaweedFS with authentication): what
lands there, that credentials stay out of everything the run writes, and a resume from S3 alone after
the local checkpoints are gone, bit-identical to the uninterrupted reference run."""
from __future__ import annotations

import json
import shutil

import pytest
import yaml

from tests.e2e.cli import SHORT, assert_matches_reference, cli, cli_env, record, run_dirs, stop_run_at
from tests.services.seaweed import SeaweedS3

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed"))
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def s3_run(workspace, s3, tmp_path_factory):
    """smoke-pretrain (SHORT) with checkpoint.uri on the S3 server; credentials only in env vars."""
    root = tmp_path_factory.mktemp("s3-runs")
    profile = yaml.safe_load((workspace / "cluster_profiles" / "local.yaml").read_text())
    profile["name"] = "local-s3"
    profile["storage"] = {"run_root": str(root), "s3": {"endpoint_url": s3.endpoint, "access_key_id_env": "E2E_S3_KEY",
                                                       "secret_access_key_env": "E2E_S3_SECRET"}}
    path = root / "local-s3.yaml"
    path.write_text(yaml.safe_dump(profile))
    env = cli_env(root, E2E_S3_KEY=s3.access_key, E2E_S3_SECRET=s3.secret_key)
    out = cli(workspace, "submit", "recipes/smoke-pretrain.yaml", "--profile", str(path), "--wait", *SHORT,
              f"checkpoint.uri=s3://{s3.bucket}/e2e", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    (run_dir,) = run_dirs(root)
    return run_dir, env, path


def _remote(s3, run_dir):
    return f"{s3.bucket}/e2e/{run_dir.name}"


def test_committed_checkpoints_are_on_s3_and_no_secret_anywhere(s3_run, s3, reference_run):
    run_dir, _, _ = s3_run
    fs = s3.filesystem()
    remote = _remote(s3, run_dir)
    # Objects, not prefixes: SeaweedFS keeps an emptied folder entry after its objects are deleted.
    steps = sorted({int(p[len(remote) + 1:].split("/")[0].split("-")[1]) for p in fs.find(remote) if "/step-" in p})
    assert steps == [6, 9, 12]  # keep_last 3, applied to the remote copy too
    for step in steps:
        names = {p.rsplit("/", 1)[1] for p in fs.find(f"{remote}/step-{step}")}
        assert {"COMMIT.json", "manifest-rank0.json", "manifest-rank1.json"} <= names
        commit = json.loads(fs.cat(f"{remote}/step-{step}/COMMIT.json"))
        assert commit["step"] == step and commit["world_size"] == 2
    assert fs.cat(f"{remote}/LATEST").decode().strip() == "step-12"
    durable = record(run_dir)["checkpoints"]["latest_durable"]
    assert durable["step"] == 12 and durable["uri"].startswith(f"s3://{s3.bucket}/e2e/")
    assert_matches_reference(run_dir, reference_run)  # syncing changes nothing in training
    secret = s3.secret_key.encode()
    leaks = [str(p) for p in run_dir.parent.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert not leaks, f"the S3 secret appears in {leaks}"


def test_local_checkpoints_gone_the_run_resumes_from_s3(s3_run, s3, workspace, reference_run):
    run_dir, env, profile = s3_run
    stop_run_at(run_dir, keep_up_to=9)
    shutil.rmtree(run_dir / "checkpoints")
    fs = s3.filesystem()
    fs.rm(f"{_remote(s3, run_dir)}/step-12", recursive=True)  # the newest durable one is now step-9
    plan = cli(workspace, "resume", run_dir.name, "--plan", env=env)
    assert plan.returncode == 0 and "would load: step-9 from remote" in plan.stdout, plan.stdout + plan.stderr
    out = cli(workspace, "resume", run_dir.name, "--wait", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    log = (run_dir / "logs" / "rank-0.log").read_text()
    assert "resumed at step 9" in log
    assert_matches_reference(run_dir, reference_run)
    assert record(run_dir)["checkpoints"]["latest_durable"]["step"] == 12
