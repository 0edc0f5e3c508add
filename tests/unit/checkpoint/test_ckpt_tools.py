"""The hand tools of the recovery runbook, and the single-process Comm."""
import json
import subprocess
import sys

import pytest

from tests.unit.checkpoint.ckpt_helpers import payload, writer
from unigen.orchestrator.checkpoint import CheckpointManager
from unigen.orchestrator.comm import Comm, LocalComm


def tool(*args):
    return subprocess.run([sys.executable, "-m", "unigen.orchestrator.checkpoint", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "my-run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    mgr = CheckpointManager(run / "checkpoints")
    for step in (100, 200):
        mgr.save(step, writer(payload(step)), metadata={"samples_seen": step * 8})
    return run


def test_plan_tool_explains_the_choice_and_reads_only(run_dir):
    (run_dir / "checkpoints" / "step-200" / "COMMIT.json").unlink()
    out = tool("plan", run_dir)
    assert out.returncode == 0, out.stderr
    assert "would load: step-100 from local" in out.stdout
    assert "step-200" in out.stdout and "no COMMIT.json" in out.stdout
    assert (run_dir / "checkpoints" / "step-200").is_dir()  # planning never moves anything
    as_json = json.loads(tool("plan", run_dir, "--json").stdout)
    assert as_json["chosen"]["step"] == 100 and as_json["chosen"]["metadata"] == {"samples_seen": 800}
    assert as_json["rejected"][0]["reason"].startswith("no COMMIT.json")


def test_plan_tool_exits_2_when_nothing_verifies(run_dir):
    for step in (100, 200):
        (run_dir / "checkpoints" / f"step-{step}" / "shard1.bin").write_bytes(b"x")
    out = tool("plan", run_dir)
    assert out.returncode == 2 and "cannot resume: checkpoints exist but none verifies" in out.stdout


def test_verify_tool(run_dir):
    good = tool("verify", run_dir / "checkpoints" / "step-200")
    assert good.returncode == 0 and good.stdout.startswith("OK")
    (run_dir / "checkpoints" / "step-100" / "shard2.bin").write_bytes(b"y")
    bad = tool("verify", run_dir / "checkpoints" / "step-100")
    assert bad.returncode == 2 and "shard2.bin is 1 bytes" in bad.stdout
    assert tool("verify", run_dir).returncode == 1


def test_pull_tool_downloads_a_remote_copy(tmp_path, run_dir):
    remote = tmp_path / "remote"
    mgr = CheckpointManager(run_dir / "checkpoints", remote_uri=str(remote))
    mgr.save(300, writer(payload(300)), metadata={})
    assert mgr.flush(30)
    mgr.close()
    target = tmp_path / "other-run"
    out = tool("pull", remote, 300, target)
    assert out.returncode == 0, out.stderr
    assert "sha256 verified" in out.stdout
    assert CheckpointManager(target).plan_resume().chosen.step == 300
    assert tool("pull", remote, 300, target).returncode == 2  # already there: refused, not overwritten


def test_local_comm_is_a_comm():
    c = LocalComm()
    assert isinstance(c, Comm) and (c.rank, c.world_size) == (0, 1)
    assert c.all_reduce_any(True) and not c.all_reduce_any(False) and c.all_reduce_max(7) == 7
    assert c.broadcast_object({"a": 1}) == {"a": 1} and c.barrier() is None
    with pytest.raises(ValueError, match="src=1"):
        c.broadcast_object(1, src=1)


def test_checkpoint_package_imports_nothing_heavy():
    code = ("import sys, unigen.orchestrator.checkpoint, unigen.orchestrator.signals, unigen.orchestrator.comm, "
            "unigen.orchestrator.checkpoint.__main__\n"
            "print([m for m in ('torch', 'boto3', 'botocore', 's3fs', 'fsspec', 'mlflow') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unusable_remote_uri_fails_at_construction(tmp_path):
    from unigen.orchestrator.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match=r"checkpoint.uri 'nosuchproto://b/x': cannot open it"):
        CheckpointManager(tmp_path, remote_uri="nosuchproto://b/x")
