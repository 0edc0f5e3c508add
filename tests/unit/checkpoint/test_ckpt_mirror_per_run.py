"""A run's checkpoints are mirrored to ``checkpoint.uri`` + its run id, and everything that reads the
mirror back uses that same folder: a later stage's ``init_from: run:<id>`` once the stage-1 run's local
checkpoints are gone, and ``unigen resume --plan``. A relative local ``checkpoint.uri`` is made absolute
where the recipe is resolved, so a resume from another folder mirrors to the same place."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.unit.checkpoint.ckpt_helpers import payload, writer
from tests.unit.tracking.tracking_helpers import make_recipe, make_run
from unigen.orchestrator.checkpoint import CheckpointManager
from unigen.orchestrator.commands.runref import checkpoint_manager
from unigen.orchestrator.config.recorded import recorded_recipe
from unigen.orchestrator.config.resolve import resolve_submission
from unigen.orchestrator.runs import RunLedger, checkpoint_mirror
from unigen.orchestrator.runtime.init_from import locate_init

ROOT = Path(__file__).resolve().parents[3]


def _stage1_with_only_a_durable_copy(tmp_path: Path) -> tuple[RunLedger, str]:
    """A completed stage-1 run whose step 10 lives only in its mirror (the local copy was cleaned up)."""
    store = tmp_path / "store"
    ledger = make_run(tmp_path / "runs", "pre-1", make_recipe("pre", "pretrain", max_steps=10,
                                                            checkpoint={"uri": str(store)}))
    mirror = checkpoint_mirror(recorded_recipe(ledger.read()), "pre-1")
    assert mirror == f"{store}/pre-1"
    manager = CheckpointManager(ledger.paths.checkpoints, remote_uri=mirror)
    try:
        manager.save(10, writer(payload(10)), metadata={"samples_seen": 80})
        assert manager.flush(30), "the mirror upload did not finish"
    finally:
        manager.close()
    durable = f"{mirror}/step-10"
    ledger.update(lambda r: (r.__setitem__("status", "completed"),
                             r["checkpoints"].__setitem__("latest_durable", {"step": 10, "uri": durable})))
    shutil.rmtree(ledger.paths.checkpoints)
    ledger.paths.checkpoints.mkdir()
    return ledger, durable


def test_init_from_a_run_reads_its_mirror_when_the_local_checkpoints_are_gone(tmp_path):
    stage1, durable = _stage1_with_only_a_durable_copy(tmp_path)
    stage2 = tmp_path / "runs" / "sft-1"
    stage2.mkdir()
    step_dir, lineage = locate_init("run:pre-1", run_dir=stage2, storage_options=None)
    assert (step_dir / "COMMIT.json").is_file() and step_dir.name == "step-10"
    assert lineage["run_id"] == "pre-1" and lineage["step"] == 10 and lineage["checkpoint"] == durable
    assert sorted(p.name for p in step_dir.iterdir()) == sorted(
        p.name for p in Path(durable).iterdir())  # downloaded whole, manifests and COMMIT included


def test_resume_plan_lists_the_same_mirror(tmp_path):
    stage1, _ = _stage1_with_only_a_durable_copy(tmp_path)
    plan = checkpoint_manager(stage1).plan_resume(strict=False)
    assert plan.chosen is not None and plan.chosen.step == 10 and plan.chosen.source == "remote"


def test_init_from_a_run_without_any_checkpoint_says_so(tmp_path):
    make_run(tmp_path / "runs", "pre-2", make_recipe("pre", "pretrain", max_steps=10,
                                                     checkpoint={"uri": str(tmp_path / "store")}))
    with pytest.raises(Exception, match="has no committed checkpoint yet"):
        locate_init("run:pre-2", run_dir=tmp_path / "runs" / "sft-2", storage_options=None)


@pytest.mark.parametrize("uri, expected", [
    ("unigen-store/checkpoints", "{cwd}/unigen-store/checkpoints"),
    ("./store/../store2", "{cwd}/store2"),
    ("s3://bucket/prefix", "s3://bucket/prefix"),
    (None, None),
])
def test_a_relative_local_checkpoint_uri_is_made_absolute_from_the_submit_folder(tmp_path, monkeypatch, uri,
                                                                                 expected):
    monkeypatch.chdir(ROOT)  # where recipes/ and cluster_profiles/ are found, as a user submits
    override = f"checkpoint.uri={'null' if uri is None else uri}"
    sub = resolve_submission(["recipes/smoke-pretrain.yaml"], "local", [override], purpose="validate")
    got = sub.stages[0].resolved()["checkpoint"]["uri"]
    assert got == (expected.format(cwd=ROOT) if expected else None)
