"""The Ray launcher against a real Ray head on 127.0.0.1, through the `unigen` CLI.

One `unigen submit smoke-pretrain smoke-instruct --wait` with 2 workers, because every attempt pays
the ranks' start-up (~15 s alone, a minute on a busy machine), so the checks share three attempts:
- stage 1: a rank is SIGKILLed by its pid mid-run; the group is restarted from the last committed
  checkpoint and completes; the steps run twice (after the checkpoint, before the kill) have
  bit-identical losses; run.json shows both attempts with the Ray job id;
- stage 2 starts only after stage 1 completed, from its final checkpoint;
- `unigen status` shows the Ray job's state; `unigen cancel` of stage 2: every rank saves a committed
  checkpoint, the run is cancelled, `submit --wait` exits 1.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.services.procs import pid_alive, wait_until
from tests.smoke_shape import SHAPE
from unigen.orchestrator.launchers.ray.launcher import LAUNCHER
from unigen.orchestrator.runs import RunLedger

pytestmark = [pytest.mark.services, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "tests" / "profiles" / "ray-local.yaml"
UNIGEN = str(Path(sys.executable).parent / "unigen")
SHORT = [*SHAPE, "train.max_steps=8", "train.warmup_steps=2", "checkpoint.every=3", "train.log_every=1"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder to submit from: the recipes and the synthetic corpus their relative paths name."""
    ws = tmp_path_factory.mktemp("ray-ws")
    shutil.copytree(ROOT / "recipes", ws / "recipes")
    subprocess.run([UNIGEN, "data", "synth", "--out", "unigen-data/shapes"], cwd=ws, check=True,
                   capture_output=True, timeout=300)
    return ws


def cli_env(ray_head, run_root: Path) -> dict[str, str]:
    env = ray_head.environ(UNIGEN_RUN_ROOT=str(run_root), OMP_NUM_THREADS="1")
    env.pop("RAY_ADDRESS")  # the profile's explicit address is what must be used
    return env


def unigen(args, *, workspace, env, timeout=120, check=True) -> subprocess.CompletedProcess:
    out = subprocess.run([UNIGEN, *args], cwd=workspace, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert out.returncode == 0, f"unigen {' '.join(args)} -> {out.returncode}\n{out.stdout}\n{out.stderr[-3000:]}"
    return out


def one_run(run_root: Path, prefix: str, timeout: float = 60) -> RunLedger:
    def found() -> list[Path]:
        return sorted(run_root.glob(f"{prefix}-*/run.json"))

    assert wait_until(lambda: bool(found()), timeout), f"no {prefix} run under {run_root}"
    return RunLedger(found()[0].parent)


def wait_while_running(proc: subprocess.Popen, check, timeout: float, why) -> None:
    """Poll ``check`` until true; fail at once (with ``why()``) if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f"unigen submit exited {proc.returncode} early\n{why()}"
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s\n{why()}"
        time.sleep(0.1)


def metrics(ledger: RunLedger) -> list[dict]:
    return [json.loads(line) for line in (ledger.paths.root / "metrics.jsonl").read_text().splitlines()]


def failure_report(ledger: RunLedger, ray_head, sub_out: str = "") -> str:
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}" for p in sorted(ledger.paths.logs.glob("*.log")))
    return f"run.json:\n{json.dumps(ledger.read(), indent=1)[-3000:]}\n{logs}\n{sub_out[-2000:]}\n{ray_head.logs(15)}"


def test_two_stages_kill_and_recover_then_cancel(ray_head, workspace, tmp_path):
    run_root = tmp_path / "runs"
    env = cli_env(ray_head, run_root)
    log_path = tmp_path / "submit.out"
    with open(log_path, "w") as out:
        proc = subprocess.Popen([UNIGEN, "submit", "recipes/smoke-pretrain.yaml", "recipes/smoke-instruct.yaml",
                                 "--profile", str(PROFILE), "--wait", f"profile.ray.address={ray_head.dashboard_url}",
                                 *SHORT, "instruct:train.max_steps=60"], cwd=workspace, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        stage1 = one_run(run_root, "smoke-pretrain")
        ckpt = stage1.paths.checkpoints / "step-3" / "COMMIT.json"
        # Kill once step 3 is committed and step 4 was trained: step 4 then runs twice.
        wait_while_running(proc, lambda: ckpt.exists() and (stage1.read()["progress"]["step"] or 0) >= 4, 400,
                           lambda: failure_report(stage1, ray_head, log_path.read_text()))
        victim = stage1.read()["attempts"][-1]["ranks"][1]["pid"]
        assert victim in ray_head.pids()  # a rank of OUR head's job, killed by its pid
        os.kill(victim, signal.SIGKILL)

        stage2 = one_run(run_root, "smoke-instruct")
        wait_while_running(proc, lambda: (stage2.read()["progress"]["step"] or 0) >= 1, 500,
                           lambda: failure_report(stage2, ray_head, log_path.read_text()))
        status = unigen(["status", stage2.run_id], workspace=workspace, env=env).stdout
        assert "status:     running (RUNNING)" in status, status
        line = unigen(["cancel", stage2.run_id], workspace=workspace, env=env).stdout
        assert f"asked Ray job unigen-{stage1.run_id} to stop {stage2.run_id}" in line
        assert proc.wait(timeout=300) == 1, failure_report(stage2, ray_head, log_path.read_text())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    submit_out = log_path.read_text()
    r1, r2 = stage1.read(), stage2.read()
    job = f"unigen-{r1['run_id']}"

    # Stage 1: the failed attempt, then the resumed one, both recorded with the Ray job id.
    assert r1["status"] == "completed" and r1["error"] is None, failure_report(stage1, ray_head)
    crashed, resumed = r1["attempts"]
    assert crashed["exit_reason"] == "crashed" and crashed["exit_code"] == -signal.SIGKILL
    assert crashed["detail"].startswith("rank 1 killed by signal 9")
    assert resumed["exit_reason"] == "completed" and resumed["exit_codes"] == [0, 0]
    assert {crashed["job_id"], resumed["job_id"]} == {job} and resumed["nodes"]
    assert crashed["ended_at"] <= resumed["started_at"]
    assert victim not in resumed["pids"] and not pid_alive(victim)
    assert stage1.paths.resolve(r1["export"]["path"]).is_dir()
    assert f"{r1['run_id']}: completed" in submit_out

    # The loss history after the resume continues from the checkpoint step, and the steps run
    # twice (after the checkpoint, before the kill) give bit-identical losses.
    rows = metrics(stage1)
    first = {m["step"]: m["loss"] for m in rows if m["attempt"] == 1}
    second = {m["step"]: m["loss"] for m in rows if m["attempt"] == 2}
    resumed_from = min(second) - 1  # 3, or 6 if step 6 was committed before the kill landed
    assert resumed_from in (3, 6) and (stage1.paths.checkpoints / f"step-{resumed_from}" / "COMMIT.json").exists(), rows
    assert f"attempt 2 started at step {resumed_from}" in stage1.paths.rank_log(0).read_text()
    assert sorted(second) == list(range(resumed_from + 1, 9)), rows
    assert sorted(first)[:4] == [1, 2, 3, 4], rows
    overlap = sorted(set(first) & set(second))
    assert overlap and all(first[s] == second[s] for s in overlap), rows
    rank1_log = unigen(["logs", r1["run_id"], "--rank", "1"], workspace=workspace, env=env).stdout
    for n in (1, 2):
        assert f"===== attempt {n} (ray job {job}) rank 1" in rank1_log

    # Stage 2: after stage 1 completed, from its final checkpoint; then cancelled: saved and stopped.
    assert r2["recipe"]["init_from"] == f"run:{r1['run_id']}"
    assert r2["init_from"]["run_id"] == r1["run_id"] and r2["init_from"]["step"] == 8
    assert len(r2["attempts"]) == 1 and r2["attempts"][0]["started_at"] >= resumed["ended_at"]
    assert r2["status"] == "cancelled", failure_report(stage2, ray_head)
    last = r2["attempts"][-1]
    assert last["exit_reason"] == "cancelled" and last["exit_codes"] == [75, 75] and last["job_id"] == job, last
    saved = r2["checkpoints"]["latest_local"]["step"]
    assert saved >= 1 and (stage2.paths.checkpoints / f"step-{saved}" / "COMMIT.json").exists()
    assert not any(pid_alive(p) for p in last["pids"])
    assert f"{r2['run_id']}: cancelled" in submit_out
    assert LAUNCHER.scheduler_state(r2) == "FAILED"  # the driver exits 1 unless every stage completed
