"""The background uploader against a path remote (fast): protocol order, resume from the remote,
remote retention, half uploads never chosen, corrupt downloads rejected, the stall watchdog,
retries, superseding, and save() never waiting on the network."""
import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest

from tests.unit.checkpoint.ckpt_helpers import fault_fs, payload, writer
from unigen.orchestrator.checkpoint import CheckpointManager, TransferPolicy

FAST = TransferPolicy(retry_base_s=0.05, retry_max_s=0.2, stall_timeout_s=1.0)


@pytest.fixture
def fs_cls():
    cls = fault_fs()
    yield cls
    cls.release.set()


class Run:
    def __init__(self, tmp_path, name="run", **kw):
        self.events = []
        self.remote = tmp_path / "bucket" / name
        self.local = tmp_path / name / "checkpoints"
        kw.setdefault("transfer", FAST)
        self.mgr = CheckpointManager(self.local, remote_uri=f"faultfs://{self.remote}",
                                     on_event=lambda k, p: self.events.append((time.monotonic(), k, p)), **kw)

    def kinds(self, kind):
        return [p for _, k, p in self.events if k == kind]

    def save(self, step, n=3, size=20_000):
        return self.mgr.save(step, writer(payload(step, n=n, size=size)), metadata={"samples_seen": step})


def test_upload_order_is_data_then_manifests_then_commit_then_latest(tmp_path, fs_cls):
    run = Run(tmp_path)
    run.save(10)
    assert run.mgr.flush(30)
    files = [p["file"] for p in run.kinds("upload_file")]
    assert sorted(files[:3]) == ["step-10/model/weights.bin", "step-10/shard1.bin", "step-10/shard2.bin"]
    assert files[3:] == ["step-10/manifest-rank0.json", "step-10/COMMIT.json"]
    remote = run.remote / "step-10"
    mtimes = {p.relative_to(remote).as_posix(): p.stat().st_mtime_ns for p in remote.rglob("*") if p.is_file()}
    assert mtimes["COMMIT.json"] >= max(v for k, v in mtimes.items() if k != "COMMIT.json")
    assert (run.remote / "LATEST").read_text() == "step-10"
    assert (run.remote / "LATEST").stat().st_mtime_ns >= mtimes["COMMIT.json"]
    [durable] = run.kinds("durable")
    assert durable["step"] == 10 and durable["bytes"] == 3 * 20_001 and not durable["already"]
    assert run.mgr.status()["durable_step"] == 10 and run.mgr.status()["pending_uploads"] == []
    assert (remote / "COMMIT.json").read_bytes() == (run.local / "step-10" / "COMMIT.json").read_bytes()
    run.mgr.close()


def test_resume_downloads_from_the_remote_when_local_is_gone(tmp_path, fs_cls):
    run = Run(tmp_path, keep_last=2)
    for step in (10, 20, 30):
        run.save(step)
        run.mgr.flush(30)
    run.mgr.close()
    assert sorted(p.name for p in run.remote.glob("step-*")) == ["step-20", "step-30"]  # remote retention
    shutil.rmtree(run.local)

    again = Run(tmp_path, keep_last=2)
    plan = again.mgr.plan_resume()
    assert plan.chosen.source == "remote" and plan.chosen.step == 30 and plan.chosen.level == "size"
    info = again.mgr.resume()
    assert info.step == 30 and info.source == "remote" and info.metadata == {"samples_seen": 30}
    assert Path(info.path) == again.local / "step-30"
    assert again.mgr.plan_resume().chosen.source == "local"  # verified in full after the download
    assert not list(again.local.glob(".incoming-*"))
    assert again.kinds("durable_known") == [{"step": 30}] and again.kinds("upload_queued") == []
    again.mgr.close()


def test_half_uploaded_remote_checkpoint_is_never_chosen(tmp_path, fs_cls):
    run = Run(tmp_path)
    run.save(10)
    run.mgr.flush(30)
    run.mgr.close()
    # A newer upload that died before its COMMIT: every data file and manifest, no COMMIT.
    partial = run.remote / "step-20"
    shutil.copytree(run.remote / "step-10", partial)
    (partial / "COMMIT.json").unlink()
    shutil.rmtree(run.local)
    again = Run(tmp_path)
    plan = again.mgr.plan_resume()
    assert plan.chosen.step == 10 and [(c.step, c.source) for c in plan.rejected] == [(20, "remote")]
    assert "no COMMIT.json" in plan.rejected[0].reason
    assert again.mgr.resume().step == 10
    again.mgr.close()


def test_corrupt_remote_copy_is_caught_after_download_and_the_previous_used(tmp_path, fs_cls):
    run = Run(tmp_path, keep_last=3)
    for step in (10, 20):
        run.save(step)
        run.mgr.flush(30)
    run.mgr.close()
    shard = run.remote / "step-20" / "shard1.bin"
    data = bytearray(shard.read_bytes())
    data[7] ^= 0xFF  # same size: only sha256 can tell
    shard.write_bytes(bytes(data))
    shutil.rmtree(run.local)
    again = Run(tmp_path, keep_last=3)
    info = again.mgr.resume()
    assert info.step == 10 and info.source == "remote"
    [resumed] = again.kinds("resumed")
    assert any("step-20 remote" in r and "sha256 mismatch" in r for r in resumed["rejected"])
    assert not (again.local / "step-20").exists() and not list(again.local.glob(".incoming-*"))
    again.mgr.close()


def test_remote_manifest_escaping_the_folder_is_refused(tmp_path, fs_cls):
    run = Run(tmp_path)
    run.save(10)
    run.mgr.flush(30)
    run.mgr.close()
    step_dir = run.remote / "step-10"
    evil = b"owned"
    manifest = json.loads((step_dir / "manifest-rank0.json").read_text())
    manifest["files"].append({"path": "../../../../escaped.txt", "size": 5, "sha256": hashlib.sha256(evil).hexdigest()})
    data = json.dumps(manifest).encode()
    (step_dir / "manifest-rank0.json").write_bytes(data)
    commit = json.loads((step_dir / "COMMIT.json").read_text())
    commit["manifests"][0].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    (step_dir / "COMMIT.json").write_text(json.dumps(commit))
    shutil.rmtree(run.local)
    again = Run(tmp_path)
    plan = again.mgr.plan_resume(strict=False)
    assert plan.chosen is None and "escapes the checkpoint folder" in plan.rejected[0].reason
    assert not list(tmp_path.rglob("escaped.txt"))


def test_stalled_transfer_is_restarted_and_save_never_waits(tmp_path, fs_cls):
    fs_cls.stall_puts = 1  # the first file upload hangs with no progress
    run = Run(tmp_path)
    info = run.save(10, n=2, size=50_000)
    assert info.blocked_s < 1.0  # the hang is the uploader's problem, not the training step's
    assert run.mgr.flush(30)
    [stalled] = run.kinds("upload_stalled")
    assert stalled["file"].startswith("step-10/") and stalled["stalled_s"] >= 1.0
    assert run.kinds("durable")[0]["step"] == 10
    run.mgr.close()


def test_outage_retries_with_backoff_until_it_uploads(tmp_path, fs_cls):
    fs_cls.fail_puts = 4
    run = Run(tmp_path)
    run.save(10, n=1)
    assert run.mgr.flush(30)
    retries = run.kinds("upload_retry")
    assert len(retries) == 4 and all("injected outage" in r["error"] for r in retries)
    assert [r["attempt"] for r in retries] == [1, 2, 3, 4]
    assert (run.remote / "step-10" / "COMMIT.json").exists()
    run.mgr.close()


def test_newer_checkpoint_supersedes_a_failing_upload_and_keep_every_is_not_dropped(tmp_path, fs_cls):
    fs_cls.stall_puts = 1  # step 10's upload hangs (1 s to the watchdog), 20 and 30 queue meanwhile
    run = Run(tmp_path, keep_last=1, keep_every=20)
    run.save(10, n=1)
    run.save(20, n=1)
    run.save(30, n=1)
    fs_cls.fail_puts = 1000  # then the remote goes down
    time.sleep(1.5)
    st = run.mgr.status()
    assert st["durable_step"] is None and set(st["pending_uploads"]) <= {20, 30}
    # Local retention keeps what is waiting for upload even beyond keep_last.
    assert (run.local / "step-30").exists() and (run.local / "step-20").exists()
    fs_cls.fail_puts = 0  # the remote is back
    assert run.mgr.flush(30)
    uploaded = [p["step"] for p in run.kinds("durable")]
    assert uploaded == [30, 20]  # the newest first, then the keep_every one; step 10 was dropped
    assert {p["step"] for p in run.kinds("upload_superseded")} == {10}
    assert (run.remote / "LATEST").read_text() == "step-30"  # never moved back by the older upload
    assert sorted(p.name for p in run.remote.glob("step-*")) == ["step-20", "step-30"]
    run.mgr.close()


def test_close_with_a_dead_remote_reports_what_was_not_uploaded(tmp_path, fs_cls):
    fs_cls.fail_puts = 1000
    run = Run(tmp_path)
    run.save(10, n=1)
    assert run.mgr.flush(0.3) is False
    assert run.mgr.close(timeout=0.3) is False
    [abandoned] = run.kinds("upload_abandoned")
    assert abandoned["steps"] == [10] and abandoned["durable_step"] is None


def test_a_resumed_run_uploads_what_the_last_attempt_did_not(tmp_path, fs_cls):
    fs_cls.fail_puts = 1000
    run = Run(tmp_path)
    run.save(10, n=1)
    run.mgr.close(timeout=0.2)  # the attempt ends before its upload
    fs_cls.fail_puts = 0
    again = Run(tmp_path)
    assert again.mgr.resume().step == 10
    assert again.mgr.flush(30)
    assert [p["step"] for p in again.kinds("durable")] == [10]
    again.mgr.close()


def test_resaved_step_replaces_the_remote_copy_commit_first(tmp_path, fs_cls):
    run = Run(tmp_path)
    run.save(10)
    run.mgr.flush(30)
    run.mgr.close()
    old_commit = (run.remote / "step-10" / "COMMIT.json").read_bytes()
    shutil.rmtree(run.local)  # a different attempt re-creates step 10 with other bytes
    again = Run(tmp_path)
    again.mgr.save(10, writer({"other.bin": b"o" * 10}), metadata={"samples_seen": 10})
    assert again.mgr.flush(30)
    new_commit = (run.remote / "step-10" / "COMMIT.json").read_bytes()
    assert new_commit != old_commit
    assert new_commit == (again.local / "step-10" / "COMMIT.json").read_bytes()
    again.mgr.close()


def test_already_durable_step_is_not_uploaded_again(tmp_path, fs_cls):
    run = Run(tmp_path)
    run.save(10)
    run.mgr.flush(30)
    run.mgr.close()
    again = Run(tmp_path)
    again.mgr._uploader_handle().submit(10, again.local / "step-10")
    assert again.mgr.flush(30)
    assert again.kinds("durable")[0]["already"] is True and again.kinds("upload_file") == []
    again.mgr.close()
