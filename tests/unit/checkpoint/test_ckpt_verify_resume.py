"""Torn and corrupt checkpoints are skipped, reported and quarantined; unsafe paths are refused;
a run whose checkpoints all fail to verify stops with an error naming them."""
import hashlib
import json
import os
import threading

import pytest

from tests.unit.checkpoint.ckpt_helpers import payload, writer
from unigen.orchestrator.checkpoint import CheckpointError, CheckpointManager
from unigen.orchestrator.checkpoint.layout import UnsafePath, atomic_write_bytes, check_relpath


@pytest.fixture
def ckpts(tmp_path):
    return tmp_path / "run" / "checkpoints"


def saved(ckpts, steps=(10, 20), **kw):
    mgr = CheckpointManager(ckpts, keep_last=5, **kw)
    for s in steps:
        mgr.save(s, writer(payload(s)), metadata={"samples_seen": s})
    return mgr


def rewrite_manifest(step_dir, rank, mutate):
    """Edit a manifest AND re-anchor it in COMMIT, so only the edit itself can fail verification."""
    mpath = step_dir / f"manifest-rank{rank}.json"
    manifest = json.loads(mpath.read_text())
    mutate(manifest)
    data = json.dumps(manifest).encode()
    mpath.write_bytes(data)
    commit = json.loads((step_dir / "COMMIT.json").read_text())
    commit["manifests"][rank].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    (step_dir / "COMMIT.json").write_text(json.dumps(commit))


def flip_byte(path, offset=100):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, reason", [
    (lambda d: (d / "COMMIT.json").unlink(), "no COMMIT.json"),
    (lambda d: (d / "manifest-rank0.json").unlink(), "manifest-rank0.json is missing"),
    (lambda d: flip_byte(d / "shard1.bin"), "shard1.bin sha256 mismatch"),
    (lambda d: flip_byte(d / "manifest-rank0.json", 5), "manifest-rank0.json sha256 mismatch"),
    (lambda d: (d / "shard2.bin").write_bytes(b"short"), "shard2.bin is 5 bytes"),
    (lambda d: (d / "model" / "weights.bin").unlink(), "missing file model/weights.bin"),
    (lambda d: (d / "COMMIT.json").write_text("{not json"), "COMMIT.json is not JSON"),
])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_and_is_quarantined(ckpts, damage, reason):
    mgr = saved(ckpts)
    damage(ckpts / "step-20")

    plan = mgr.plan_resume()  # planning reads only
    assert plan.chosen.step == 10 and plan.chosen.source == "local"
    assert [(c.step, c.source) for c in plan.rejected] == [(20, "local")]
    assert reason in plan.rejected[0].reason
    assert (ckpts / "step-20").is_dir() and not (ckpts / "quarantine").exists()
    assert "step-20" in plan.describe() and reason in plan.describe()

    info = mgr.resume()  # acting moves the bad one aside, with its reason
    assert info.step == 10 and info.metadata == {"samples_seen": 10} and info.source == "local"
    assert not (ckpts / "step-20").exists()
    [moved] = list((ckpts / "quarantine").iterdir())
    assert moved.name.startswith("step-20.") and reason in (moved / "QUARANTINE_REASON.txt").read_text()
    assert (ckpts / "LATEST").read_text() == "step-10"


def test_manifest_path_escaping_the_folder_is_rejected(ckpts, tmp_path):
    mgr = saved(ckpts)
    (tmp_path / "run" / "secret.txt").write_text("outside")
    rewrite_manifest(ckpts / "step-20", 0, lambda m: m["files"].append(
        {"path": "../../secret.txt", "size": 7, "sha256": hashlib.sha256(b"outside").hexdigest()}))
    plan = mgr.plan_resume()
    assert plan.chosen.step == 10
    assert "escapes the checkpoint folder" in plan.rejected[0].reason


def test_manifest_path_escaping_through_a_symlink_is_rejected(ckpts, tmp_path):
    mgr = saved(ckpts)
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(b"z" * 10)
    os.symlink(outside, ckpts / "step-20" / "link.bin")
    rewrite_manifest(ckpts / "step-20", 0, lambda m: m["files"].append(
        {"path": "link.bin", "size": 10, "sha256": hashlib.sha256(b"z" * 10).hexdigest()}))
    plan = mgr.plan_resume()
    assert plan.chosen.step == 10 and "symlink" in plan.rejected[0].reason


@pytest.mark.parametrize("rel", ["../x", "/etc/passwd", "a/../../b", "", "a//b", "./a", "C:/x", "a\\..\\b"])
def test_check_relpath_refuses_unsafe_paths(rel):
    with pytest.raises(UnsafePath):
        check_relpath(rel)


def test_check_relpath_accepts_nested_relative_paths():
    assert check_relpath("global_step5/zero_pp_rank_0_mp_rank_00_optim_states.pt").startswith("global_step5/")


def test_every_checkpoint_corrupt_is_an_error_naming_them_and_nothing_moves(ckpts):
    mgr = saved(ckpts)
    flip_byte(ckpts / "step-10" / "shard1.bin")
    flip_byte(ckpts / "step-20" / "shard2.bin")
    with pytest.raises(CheckpointError, match=r"none verifies: step-20 \(local\): shard2.bin sha256 mismatch.*"
                                              r"step-10 \(local\): shard1.bin sha256 mismatch"):
        mgr.resume()
    assert (ckpts / "step-10").is_dir() and (ckpts / "step-20").is_dir()
    assert not (ckpts / "quarantine").exists()
    plan = mgr.plan_resume(strict=False)
    assert plan.chosen is None and "none verifies" in plan.error and not plan.fresh_start
    assert "cannot resume" in plan.describe()


def test_latest_without_any_checkpoint_is_an_error_not_a_fresh_start(ckpts):
    mgr = saved(ckpts, steps=(10,))
    (ckpts / "step-10" / "COMMIT.json").unlink()  # looks torn, but LATEST proves a commit happened
    with pytest.raises(CheckpointError, match="LATEST says step-10 but no committed checkpoint"):
        mgr.resume()


def test_only_uncommitted_folders_mean_a_fresh_start_and_are_quarantined(ckpts):
    ckpts.mkdir(parents=True)
    (ckpts / "step-5").mkdir()
    (ckpts / "step-5" / "model.bin").write_bytes(b"partial")
    mgr = CheckpointManager(ckpts)
    plan = mgr.plan_resume()
    assert plan.fresh_start and [c.step for c in plan.rejected] == [5]
    assert "would start fresh" in plan.describe()
    assert mgr.resume() is None
    assert not (ckpts / "step-5").exists() and len(list((ckpts / "quarantine").iterdir())) == 1


def test_empty_run_starts_fresh(ckpts):
    mgr = CheckpointManager(ckpts)
    assert mgr.resume() is None and mgr.plan_resume().describe().endswith("no committed checkpoint exists")


def test_size_level_plan_skips_hashing(ckpts):
    mgr = saved(ckpts)
    flip_byte(ckpts / "step-20" / "shard1.bin")
    assert mgr.plan_resume(level="size").chosen.step == 20  # same size: only sha256 catches it
    assert mgr.plan_resume(level="sha256").chosen.step == 10


def test_commit_copied_from_another_step_is_rejected(ckpts):
    mgr = saved(ckpts)
    (ckpts / "step-20" / "COMMIT.json").write_bytes((ckpts / "step-10" / "COMMIT.json").read_bytes())
    assert "COMMIT.json says step 10" in mgr.plan_resume().rejected[0].reason


def test_latest_is_replaced_atomically_under_a_concurrent_reader(tmp_path):
    latest = tmp_path / "LATEST"
    atomic_write_bytes(latest, b"step-0")
    seen, stop = set(), threading.Event()

    def reader():
        while not stop.is_set():
            seen.add(latest.read_text())

    t = threading.Thread(target=reader)
    t.start()
    for i in range(1, 300):
        atomic_write_bytes(latest, f"step-{i}".encode())
    stop.set()
    t.join()
    assert seen and all(s.startswith("step-") and s[5:].isdigit() for s in seen)  # never empty, never torn
    assert [p.name for p in tmp_path.iterdir()] == ["LATEST"]  # no temp files left


def test_latest_keeps_old_content_when_the_replace_never_happens(tmp_path, monkeypatch):
    latest = tmp_path / "LATEST"
    atomic_write_bytes(latest, b"step-1")

    def crash(*a):
        raise KeyboardInterrupt  # as if the process died between writing the temp file and renaming
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(latest, b"step-2")
    monkeypatch.undo()
    assert latest.read_text() == "step-1" and [p.name for p in tmp_path.iterdir()] == ["LATEST"]


@pytest.mark.parametrize("returned, match", [
    ("model.bin", "must return a list"),
    (["nope.bin"], "does not exist"),
    (["../escape.bin"], "unusable path"),
    (["COMMIT.json"], "belong to the commit protocol"),
    (["/tmp"], "outside the step folder"),
])
def test_write_fn_mistakes_fail_the_save_with_the_fix(ckpts, returned, match):
    mgr = saved(ckpts, steps=(10,))

    def write(step_dir):
        (step_dir / "model.bin").write_bytes(b"m")
        if returned == ["COMMIT.json"]:
            (step_dir / "COMMIT.json").write_text("{}")
        return returned

    with pytest.raises(CheckpointError, match=match):
        mgr.save(20, write, metadata={})
    assert not (ckpts / "step-20").exists() and mgr.plan_resume().chosen.step == 10


def test_write_fn_may_return_absolute_paths_and_folders(ckpts):
    mgr = CheckpointManager(ckpts)

    def write(step_dir):
        (step_dir / "ds" / "global_step3").mkdir(parents=True)
        (step_dir / "ds" / "global_step3" / "a.pt").write_bytes(b"a")
        (step_dir / "ds" / "global_step3" / "b.pt").write_bytes(b"b")
        (step_dir / "extra.json").write_text("{}")
        return [step_dir / "ds", str(step_dir / "extra.json")]

    mgr.save(3, write, metadata={})
    files = json.loads((ckpts / "step-3" / "manifest-rank0.json").read_text())["files"]
    assert [f["path"] for f in files] == ["ds/global_step3/a.pt", "ds/global_step3/b.pt", "extra.json"]


def test_metadata_must_be_json_and_secrets_are_scrubbed(ckpts, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "planted-secret-value-42")
    mgr = CheckpointManager(ckpts)
    with pytest.raises(CheckpointError, match="JSON-serialisable"):
        mgr.save(1, writer(payload(1)), metadata={"bad": object()})
    mgr.save(2, writer(payload(2)), metadata={"note": "oops planted-secret-value-42 leaked"})
    assert "planted-secret-value-42" not in (ckpts / "step-2" / "COMMIT.json").read_text()


def test_a_torn_leftover_of_the_same_step_is_set_aside_before_saving_again(ckpts):
    mgr = saved(ckpts, steps=(10,))
    (ckpts / "step-20").mkdir()
    (ckpts / "step-20" / "junk.bin").write_bytes(b"from a crashed attempt")
    info = mgr.save(20, writer(payload(20)), metadata={})
    assert info.source == "saved" and not (ckpts / "step-20" / "junk.bin").exists()
    assert len(list((ckpts / "quarantine").iterdir())) == 1
