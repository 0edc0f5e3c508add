"""SIGKILL at every point of a save: afterwards the newest verified checkpoint is either the previous
one or the complete new one, and resume picks it without an error."""
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.unit.checkpoint.ckpt_helpers import writer
from unigen.orchestrator.checkpoint import CheckpointManager

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from unigen.orchestrator import atomic
    from unigen.orchestrator.checkpoint import CheckpointManager, protocol
    from unigen.orchestrator.checkpoint.local import LocalStore

    point, root = sys.argv[1], Path(sys.argv[2])
    die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)

    def write(step_dir):
        (step_dir / "a.bin").write_bytes(os.urandom(4096))
        if point == "during_write" and step_dir.name == "step-2":
            die()
        (step_dir / "b.bin").write_bytes(os.urandom(4096))
        return ["a.bin", "b.bin"]

    mgr = CheckpointManager(root, keep_last=1)
    mgr.save(1, write, metadata={"n": 1})
    if point == "after_manifests":
        protocol._commit = die
    if point == "commit_temp_written":
        real = atomic.os.replace
        def replace(src, dst):
            if str(dst).endswith("COMMIT.json"):
                die()
            return real(src, dst)
        atomic.os.replace = replace
    if point == "before_latest":
        LocalStore.write_latest = die
    if point == "during_retention":
        mgr.store.discard = die
    mgr.save(2, write, metadata={"n": 2})
    die()
""")


@pytest.mark.parametrize("point, expected", [
    ("during_write", 1), ("after_manifests", 1), ("commit_temp_written", 1),
    ("before_latest", 2), ("during_retention", 2), ("after_save", 2),
])
def test_kill_during_save_leaves_previous_or_complete_new_checkpoint(tmp_path, point, expected):
    root = tmp_path / "checkpoints"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, point, str(root)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    mgr = CheckpointManager(root, keep_last=1)
    plan = mgr.plan_resume()
    assert plan.chosen.step == expected
    info = mgr.resume()
    assert info.step == expected and info.metadata == {"n": expected}
    assert (root / "LATEST").read_text() == f"step-{expected}"
    # The run goes on: a torn step-2 went to quarantine and is saved anew; a committed one is kept.
    again = mgr.save(2, writer({"c.bin": b"c"}), metadata={"n": 2})
    assert again.source == ("saved" if expected == 1 else "existing")
    assert (root / "quarantine").exists() == (expected == 1)
    assert mgr.plan_resume().chosen.step == 2
