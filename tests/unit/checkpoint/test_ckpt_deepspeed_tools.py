"""DeepSpeed's own tools on unigen's checkpoints: the checkpoints folder (and its mirror) holds DeepSpeed's
``latest`` and ``zero_to_fp32.py``, so its documented ``python zero_to_fp32.py . out`` works unchanged and
gives the weights unigen's consolidation (the export's source) gives; ``latest`` never names a step that
is not committed."""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.checkpoint.ckpt_helpers import Ranks, writer
from unigen.orchestrator.checkpoint import CheckpointError, CheckpointManager
from unigen.orchestrator.checkpoint.plan import make_plan
from unigen.orchestrator.checkpoint.remote import Remote

ZERO_FILE = "zero_pp_rank_0_mp_rank_00_optim_states.pt"  # the name that marks a ZeRO step


def installed(name: str) -> bytes:
    return (Path(importlib.util.find_spec("deepspeed").origin).parent / "utils" / name).read_bytes()


@pytest.fixture(scope="module")
def zero3_run(tmp_path_factory):
    """A committed step-1 of a 2-rank ZeRO-3 job (real DeepSpeed on CPU), mirrored to a path remote."""
    run_dir = tmp_path_factory.mktemp("zero3")
    results = Ranks("zero3", run_dir).wait(timeout=240)
    for rc, report, text in results:
        assert rc == 0 and report and report["saved"][2] == "saved", text[-3000:]
    return run_dir


def documented_command(folder: Path) -> dict:
    """``python zero_to_fp32.py . out`` inside ``folder``, as DeepSpeed documents it; the weights it wrote."""
    import torch

    done = subprocess.run([sys.executable, "zero_to_fp32.py", ".", "out"], cwd=folder, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return torch.load(folder / "out" / "pytorch_model.bin", map_location="cpu", weights_only=True)


def assert_same(got: dict, want: dict) -> None:
    import torch

    assert sorted(got) == sorted(want)
    unequal = [k for k in want if got[k].dtype != want[k].dtype or not torch.equal(got[k], want[k])]
    assert not unequal


def test_documented_command_in_the_checkpoints_folder_gives_the_consolidated_weights(zero3_run):
    import torch

    from unigen.orchestrator.runtime.consolidate import fp32_state_dict

    ckpts = zero3_run / "checkpoints"
    assert (ckpts / "latest").read_text() == "step-1" == (ckpts / "LATEST").read_text()
    assert (ckpts / "zero_to_fp32.py").read_bytes() == installed("zero_to_fp32.py")
    assert os.access(ckpts / "zero_to_fp32.py", os.X_OK)
    ours = fp32_state_dict(ckpts / "step-1")  # what `unigen export` and init_from read
    theirs = documented_command(ckpts)
    assert_same(theirs, ours)
    # ... and both are the trained weights: the full tensors gathered from the ranks at save time.
    truth = torch.load(zero3_run / "truth.pt", map_location="cpu", weights_only=True)
    # The frozen tensor ("0.bias") is in no checkpoint: it comes from the model's source on resume/export.
    assert "0.bias" in truth and "0.bias" not in theirs
    assert_same({k: theirs[k] for k in truth if k != "0.bias"}, {k: v for k, v in truth.items() if k != "0.bias"})
    assert not torch.equal(truth["0.weight"], torch.nn.Linear(6, 16).weight)  # not a trivial comparison
    # DeepSpeed's files beside the step folders are no step entries for unigen's own resume.
    plan = make_plan(ckpts, Remote(str(zero3_run / "mirror")))
    assert plan.chosen.step == 1 and plan.chosen.source == "local" and not plan.rejected and not plan.error


def test_the_mirror_has_them_after_commit_and_the_command_works_in_a_copy_of_it(zero3_run, tmp_path):
    mirror = zero3_run / "mirror"
    assert (mirror / "latest").read_text() == "step-1"
    assert (mirror / "zero_to_fp32.py").read_bytes() == installed("zero_to_fp32.py")
    # Uploaded after the checkpoint's COMMIT and LATEST: DeepSpeed's latest never names a half upload.
    mtime = {name: (mirror / name).stat().st_mtime_ns for name in ("LATEST", "zero_to_fp32.py", "latest")}
    assert (mirror / "step-1" / "COMMIT.json").stat().st_mtime_ns <= mtime["LATEST"] <= mtime["zero_to_fp32.py"] \
        <= mtime["latest"]
    copy = tmp_path / "copy"
    shutil.copytree(mirror, copy)  # what `aws s3 sync s3://.../<run id> .` gives a user
    ckpts = zero3_run / "checkpoints"
    out = ckpts / "out" / "pytorch_model.bin"
    if not out.exists():
        documented_command(ckpts)
    import torch

    assert_same(documented_command(copy), torch.load(out, map_location="cpu", weights_only=True))


def test_a_resume_from_the_mirror_brings_them_back(zero3_run, tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(zero3_run / "mirror", mirror)
    local = tmp_path / "run" / "checkpoints"
    mgr = CheckpointManager(local, remote_uri=str(mirror))
    info = mgr.resume()
    mgr.close()
    assert info.step == 1 and info.source == "remote"
    assert (local / "latest").read_text() == "step-1"
    assert (local / "zero_to_fp32.py").read_bytes() == installed("zero_to_fp32.py")
    assert (local / "zero_to_torch.py").read_bytes() == installed("zero_to_torch.py")  # it imports zero_to_fp32


def test_latest_names_only_committed_steps(tmp_path):
    ckpts = tmp_path / "checkpoints"
    mgr = CheckpointManager(ckpts, keep_last=1)

    def broken(step_dir):
        raise OSError("disk full (injected)")
    with pytest.raises(CheckpointError):
        mgr.save(1, broken, metadata={})
    assert not (ckpts / "latest").exists()

    mgr.save(2, writer({"a.bin": b"a"}), metadata={})
    assert (ckpts / "latest").read_text() == "step-2"
    assert not (ckpts / "zero_to_fp32.py").exists()  # no ZeRO partitions: DeepSpeed's script would refuse it
    mgr.save(3, writer({ZERO_FILE: b"z"}), metadata={})
    assert (ckpts / "latest").read_text() == "step-3" and not (ckpts / "step-2").exists()  # retention
    assert (ckpts / "zero_to_fp32.py").read_bytes() == installed("zero_to_fp32.py")

    (ckpts / "zero_to_fp32.py").write_bytes(b"torn")  # a copy DeepSpeed's engine left half written
    mgr.store.write_latest(3)
    assert (ckpts / "zero_to_fp32.py").read_bytes() == installed("zero_to_fp32.py")

    mgr.store.quarantine(ckpts / "step-3", "test")  # what a resume does with a corrupt checkpoint
    assert not (ckpts / "latest").exists()
    assert (ckpts / "LATEST").read_text() == "step-3"  # kept: it is how a resume notices lost progress
    with pytest.raises(CheckpointError, match="LATEST says step-3"):
        mgr.resume()
    mgr.close()


def test_remote_latest_goes_before_its_step_loses_its_commit(tmp_path):
    remote = Remote(str(tmp_path / "mirror"))
    (tmp_path / "mirror" / "step-4").mkdir(parents=True)
    (tmp_path / "mirror" / "step-4" / "COMMIT.json").write_text("{}")
    remote.write_deepspeed_files(4, {"zero_to_fp32.py": b"script"})
    remote.uncommit(5)
    assert (tmp_path / "mirror" / "latest").read_text() == "step-4"  # names another step: kept
    remote.delete_step(4)
    assert not (tmp_path / "mirror" / "latest").exists() and not (tmp_path / "mirror" / "step-4").exists()
    assert remote.list().steps == {}  # latest and the scripts are no step entries
