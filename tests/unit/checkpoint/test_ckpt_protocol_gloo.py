"""The commit protocol with two real torch.distributed (gloo) processes writing per-rank files."""
import json
from pathlib import Path

from tests.unit.checkpoint.ckpt_helpers import Ranks
from unigen.orchestrator.checkpoint import CheckpointManager
from unigen.orchestrator.checkpoint.verify import LocalStepView, verify_step


def test_two_ranks_commit_fail_together_and_resume_the_same_folder(tmp_path):
    results = Ranks("commit", tmp_path).wait()
    for code, report, text in results:
        assert code == 0, text
    (_, r0, _), (_, r1, _) = results
    ckpts = tmp_path / "checkpoints"
    assert r0["collectives"] == r1["collectives"] == [15, False, True, {"from": 1}]  # TorchComm over gloo

    # Every save returned on both ranks with the same committed folder.
    assert [s[:3] for s in r0["saved"]] == [s[:3] for s in r1["saved"]]
    assert [s[0] for s in r0["saved"]] == [1, 2, 3, 4] and all(s[3] for s in r0["saved"])

    # keep_last=2: steps 3 and 4 remain, each with both ranks' manifests listing only their own files.
    assert sorted(p.name for p in ckpts.glob("step-*")) == ["step-3", "step-4"]
    for step in (3, 4):
        d = ckpts / f"step-{step}"
        commit = json.loads((d / "COMMIT.json").read_text())
        assert commit["world_size"] == 2 and commit["metadata"]["samples_seen"] == step * 8
        assert [m["path"] for m in commit["manifests"]] == ["manifest-rank0.json", "manifest-rank1.json"]
        for rank in (0, 1):
            files = json.loads((d / f"manifest-rank{rank}.json").read_text())["files"]
            assert [f["path"] for f in files] == [f"model_rank{rank}.pt", f"optim/optim_rank{rank}.pt"]
        assert verify_step(LocalStepView(d), step).ok
    assert (ckpts / "LATEST").read_text() == "step-4"

    # Rank 1's write_fn failed at step 5: BOTH ranks raised (nobody hung in a barrier), rank 1 with its
    # own cause; the torn folder went to quarantine and step 4 stays the newest.
    assert "disk full (injected) on rank 1" in r1["failed_save"]
    assert "another rank failed" in r0["failed_save"]
    assert not (ckpts / "step-5").exists()
    assert [p.name.split(".")[0] for p in (ckpts / "quarantine").iterdir()] == ["step-5"]

    # Saving an already committed step does not rewrite it.
    assert r0["again_source"] == r1["again_source"] == "existing"

    # resume: rank 0 decided, both got the same folder and metadata.
    assert r0["resume"] == r1["resume"]
    assert r0["resume"][0] == 4 and Path(r0["resume"][1]).name == "step-4"
    assert r0["resume"][2] == {"samples_seen": 32, "mlflow_run_id": "abc"} and r0["resume"][3] == 2
    assert "committed" in r0["events"]

    # The CLI's view (no torch, one process) agrees.
    plan = CheckpointManager(ckpts).plan_resume()
    assert plan.chosen.step == 4 and plan.rejected == []
