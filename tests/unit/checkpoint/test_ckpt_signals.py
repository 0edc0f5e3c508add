"""Preemption flag: handlers only set a flag, a second signal during a save is harmless, and all
ranks agree through an all-reduce at the step boundary."""
import json
import os
import signal
import time

import pytest

from tests.unit.checkpoint.ckpt_helpers import Ranks
from unigen.orchestrator import signals
from unigen.orchestrator.checkpoint import CheckpointManager
from unigen.orchestrator.checkpoint.verify import LocalStepView, verify_step
from unigen.orchestrator.comm import LocalComm
from unigen.orchestrator.exitcodes import EXIT_REQUEUE


@pytest.fixture
def flag():
    f = signals.PreemptionFlag().install()
    yield f
    f.uninstall()


def test_sigterm_and_sigusr2_only_set_the_flag(flag):
    assert not flag.requested and not flag.should_stop(LocalComm())
    os.kill(os.getpid(), signal.SIGTERM)  # the default action would kill pytest
    time.sleep(0.01)
    assert flag.requested and flag.reason == "SIGTERM" and flag.count == 1
    os.kill(os.getpid(), signal.SIGUSR2)
    time.sleep(0.01)
    assert flag.count == 2 and flag.reason == "SIGTERM"  # the first signal is the reason
    assert flag.should_stop(LocalComm()) is True
    assert EXIT_REQUEUE == 75


def test_uninstall_restores_previous_handlers():
    before = signal.getsignal(signal.SIGUSR2)
    f = signals.PreemptionFlag().install()
    assert signal.getsignal(signal.SIGUSR2) == f._handle
    f.uninstall()
    assert signal.getsignal(signal.SIGUSR2) == before


def test_second_signal_during_a_save_leaves_a_complete_checkpoint(flag, tmp_path):
    mgr = CheckpointManager(tmp_path / "checkpoints")

    def write(step_dir):
        (step_dir / "a.bin").write_bytes(b"x" * 10_000)
        for _ in range(3):  # signals arriving while this rank is writing
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
        (step_dir / "b.bin").write_bytes(b"y" * 10_000)
        return ["a.bin", "b.bin"]

    info = mgr.save(7, write, metadata={})
    assert flag.count == 3
    assert verify_step(LocalStepView(tmp_path / "checkpoints" / "step-7"), 7).ok
    assert info.source == "saved" and mgr.plan_resume().chosen.step == 7


def test_signal_on_one_rank_makes_both_ranks_save_and_exit_requeue(tmp_path):
    ranks = Ranks("signal", tmp_path)
    deadline = time.monotonic() + 90
    while not all((tmp_path / f"ready-rank{r}").exists() for r in (0, 1)):
        assert time.monotonic() < deadline, "workers never started their loop"
        assert all(p.poll() is None for p in ranks.procs), [p.communicate() for p in ranks.procs]
        time.sleep(0.1)
    time.sleep(0.3)
    ranks.signal(1, signal.SIGTERM)  # only rank 1 is told
    results = ranks.wait()
    for code, report, text in results:
        assert code == EXIT_REQUEUE, text
    (_, r0, _), (_, r1, _) = results
    # Rank 0 never got a signal, yet stopped at the same step boundary thanks to the all-reduce.
    assert r0["signal_count_before_save"] == 0 and r1["signal_count_before_save"] == 1
    assert r0["stopped_at"] == r1["stopped_at"] and r0["path"] == r1["path"]
    assert r0["signal_count"] == 2  # two SIGTERMs to itself in the middle of its write: harmless
    step = r0["stopped_at"]
    folder = tmp_path / "checkpoints" / f"step-{step}"
    verdict = verify_step(LocalStepView(folder), step)
    assert verdict.ok and verdict.commit["world_size"] == 2
    assert json.loads((folder / "COMMIT.json").read_text())["metadata"] == {"step": step}
    assert CheckpointManager(tmp_path / "checkpoints").plan_resume().chosen.step == step
