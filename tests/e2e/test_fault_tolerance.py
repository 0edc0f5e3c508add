"""Fault tolerance of real smoke runs (2 CPU ranks, ZeRO-3) through the CLI: SIGKILL at random
moments, SIGTERM to one rank, a flipped byte in a checkpoint shard, a resume on another world size.
Every interrupted run is compared with one uninterrupted reference run of the same recipe."""
from __future__ import annotations

import json
import random
import shutil
import signal
import time

import pytest

from tests.e2e.cli import (SHORT, assert_matches_reference, cli, cli_env, kill_ranks, losses_by_step, metrics,
                           rank_pids, record, run_dirs, saving_now, start_cli, stop, stop_run_at, wait_for)
from unigen.orchestrator.exitcodes import EXIT_REQUEUE
from unigen.orchestrator.runs import RunLedger

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
KILLS = 5


def _progress_step(run_dir) -> int:
    rows = metrics(run_dir)
    return rows[-1]["step"] if rows else 0


def test_sigkill_at_random_moments_ends_bit_identical(workspace, reference_run, tmp_path):
    root = tmp_path / "runs"
    proc = start_cli(workspace, "submit", "recipes/smoke-pretrain.yaml", "--profile", "local", "--wait", *SHORT,
                     f"profile.local.max_restarts={KILLS + 2}", env=cli_env(root), log=tmp_path / "submit.log")
    rnd = random.Random(1234)
    moments = []
    try:
        wait_for(lambda: run_dirs(root) if root.exists() else False, 120, "the run folder")
        (run_dir,) = run_dirs(root)
        for kill in range(1, KILLS + 1):
            wait_for(lambda: rank_pids(run_dir, kill) and len(rank_pids(run_dir, kill)) == 2, 180, f"attempt {kill}")
            pids = rank_pids(run_dir, kill)
            if kill == 2:  # one kill lands inside a checkpoint save (a step folder without COMMIT.json)
                wait_for(lambda: saving_now(run_dir), 240, "a save in progress", interval=0.002)
                moments.append("during a save")
            else:
                start = _progress_step(run_dir)
                target = start + rnd.randint(0, 2)
                wait_for(lambda: _progress_step(run_dir) >= target, 240, f"step {target}", interval=0.01)
                time.sleep(rnd.uniform(0.0, 0.8))
                moments.append(f"after step {_progress_step(run_dir)}")
            kill_ranks(pids)
        proc.wait(900)
    finally:
        stop(proc)
    rec = record(run_dir)
    reasons = [a["exit_reason"] for a in rec["attempts"]]
    assert reasons.count("crashed") == KILLS and reasons[-1] == "completed", (reasons, moments)
    assert "during a save" in moments
    assert_matches_reference(run_dir, reference_run)


def test_sigterm_to_one_rank_saves_on_all_ranks_and_requeues(workspace, reference_run, tmp_path):
    root = tmp_path / "runs"
    proc = start_cli(workspace, "submit", "recipes/smoke-pretrain.yaml", "--profile", "local", "--wait", *SHORT,
                     "profile.local.max_restarts=0", env=cli_env(root), log=tmp_path / "submit.log")
    try:
        wait_for(lambda: run_dirs(root) if root.exists() else False, 120, "the run folder")
        (run_dir,) = run_dirs(root)
        wait_for(lambda: _progress_step(run_dir) >= 4, 300, "step 4")
        pids = rank_pids(run_dir, 1)
        kill_ranks(pids[1:], signal.SIGTERM)  # only rank 1 hears it: the all-reduce tells rank 0
        assert proc.wait(600) == 0
    finally:
        stop(proc)
    first, second = record(run_dir)["attempts"][:2]
    assert (first["exit_reason"], first["exit_code"]) == ("requeue", EXIT_REQUEUE)
    log = (run_dir / "logs" / "rank-0.log").read_text()
    stopped_at = int(log.split("stopping at step ")[1].split()[0])
    commit = json.loads((run_dir / "checkpoints" / f"step-{stopped_at}" / "COMMIT.json").read_text()) \
        if (run_dir / "checkpoints" / f"step-{stopped_at}").exists() else None
    if commit is not None:  # retention may have removed it by the end; while it exists it was written by both
        assert commit["world_size"] == 2 and commit["metadata"]["reason"].startswith("preempted")
    assert f"resumed at step {stopped_at}" in log
    assert second["exit_reason"] == "completed"
    assert_matches_reference(run_dir, reference_run)


def _copy_as_stopped_run(reference_run, dest_root, *, keep_up_to: int):
    dest = dest_root / reference_run.name
    shutil.copytree(reference_run, dest, ignore=shutil.ignore_patterns("export", "tracking"))
    return stop_run_at(dest, keep_up_to=keep_up_to, forget_mlflow=True)


def test_a_flipped_byte_is_caught_and_the_previous_checkpoint_is_used(workspace, reference_run, tmp_path):
    root = tmp_path / "runs"
    run_dir = _copy_as_stopped_run(reference_run, root, keep_up_to=9)
    shard = max((run_dir / "checkpoints" / "step-9").rglob("*optim_states.pt"), key=lambda p: p.stat().st_size)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    env = cli_env(root)
    plan = cli(workspace, "resume", run_dir.name, "--plan", env=env)
    assert plan.returncode == 0, plan.stderr
    assert "would load: step-6 from local" in plan.stdout and "sha256" in plan.stdout.split("would not be used:")[1]
    out = cli(workspace, "resume", run_dir.name, "--wait", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert list((run_dir / "checkpoints" / "quarantine").glob("step-9*")), "the corrupt step-9 was not quarantined"
    assert "resumed at step 6" in (run_dir / "logs" / "rank-0.log").read_text()
    assert_matches_reference(run_dir, reference_run)


def test_two_ranks_to_one_continues_the_data_order(workspace, reference_run, tmp_path):
    root = tmp_path / "runs"
    run_dir = _copy_as_stopped_run(reference_run, root, keep_up_to=6)
    RunLedger(run_dir).update(lambda r: r["profile"]["local"].__setitem__("cpu_ranks", 1))
    # Resumed from another folder than the submit's: the ranks start where `unigen submit` ran (run.json's
    # workdir), where the recipe's relative data paths resolve.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert record(run_dir)["workdir"] == str(workspace)
    out = cli(elsewhere, "resume", run_dir.name, "--wait", env=cli_env(root))
    assert out.returncode == 0, out.stderr[-3000:]
    assert record(run_dir)["status"] == "completed"
    ref, got = losses_by_step(reference_run), losses_by_step(run_dir)
    assert got.keys() == ref.keys()
    # Step 7 sees exactly the reference's samples and weights: equal up to the order of float sums.
    for step in range(7, 13):
        assert got[step] == pytest.approx(ref[step], rel=2e-3), step
    final = json.loads((run_dir / "checkpoints" / "step-12" / "COMMIT.json").read_text())
    ref_final = json.loads((reference_run / "checkpoints" / "step-12" / "COMMIT.json").read_text())
    assert final["world_size"] == 1 and ref_final["world_size"] == 2
    assert final["metadata"]["samples_seen"] == ref_final["metadata"]["samples_seen"] == 12 * 8
    assert _data_state(run_dir / "checkpoints" / "step-12") == _data_state(reference_run / "checkpoints" / "step-12")  # same position, same cursors


def _data_state(step_dir):
    from unigen.orchestrator.runtime.state import load_rank_state

    return load_rank_state(step_dir, 0)["trainer"]["data"]
