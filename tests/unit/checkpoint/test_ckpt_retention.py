"""Retention: keep_last, keep_every, and never the newest durable checkpoint or one still uploading."""
import pytest

from tests.unit.checkpoint.ckpt_helpers import payload, writer
from unigen.orchestrator.checkpoint import CheckpointManager
from unigen.orchestrator.checkpoint.retention import select_for_deletion


def test_keep_last_keeps_the_newest():
    assert select_for_deletion([10, 20, 30, 40], keep_last=2) == [10, 20]
    assert select_for_deletion([40, 10, 30], keep_last=5) == []


def test_keep_every_keeps_multiples_forever():
    assert select_for_deletion(range(1, 11), keep_last=2, keep_every=4) == [1, 2, 3, 5, 6, 7]


def test_protected_steps_survive():
    assert select_for_deletion([1, 2, 3, 4], keep_last=1, protect={2}) == [1, 3]


@pytest.mark.parametrize("kw, match", [
    ({"keep_last": 0}, "keep_last=0: must be an integer >= 1"),
    ({"keep_last": 2, "keep_every": 0}, "keep_every=0: must be a positive integer"),
])
def test_bad_retention_settings_are_rejected_with_the_fix(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        CheckpointManager(tmp_path, **kw)


def test_manager_applies_local_retention_after_each_save(tmp_path):
    events = []
    mgr = CheckpointManager(tmp_path / "c", keep_last=2, keep_every=3, on_event=lambda k, p: events.append((k, p)))
    for step in range(1, 8):
        mgr.save(step, writer(payload(step, n=1, size=100)), metadata={})
    mgr.close()
    assert sorted(int(p.name[5:]) for p in (tmp_path / "c").glob("step-*")) == [3, 6, 7]
    assert [p["step"] for k, p in events if k == "local_deleted"] == [1, 2, 4, 5]
    assert not list((tmp_path / "c").glob(".trash-*"))  # background deletions finished
