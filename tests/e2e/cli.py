"""Driving the real `unigen` command in a workspace (recipes, profiles, the synthetic corpus), and
reading what runs leave behind: run.json, metrics.jsonl, exported weights."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.services.procs import pid_alive, wait_until
from tests.smoke_shape import SHAPE

ROOT = Path(__file__).resolve().parents[2]
# A few steps with a checkpoint every 3: enough to resume mid-run, minutes in total on 2 cores. No mirror
# (the smoke recipes' local object store): these runs are copied under other roots with their run ids, and
# copies of one run would share its mirror folder; the mirror has its own tests (test_smoke_pipeline.py,
# test_s3_checkpoints.py). They keep a weight average (train.ema_decay), so every resume test checks that it
# continues bit for bit (the export is the average) and the evaluation test that lending it to evaluation
# leaves training unchanged.
SHORT = [*SHAPE, "train.max_steps=12", "train.warmup_steps=2", "checkpoint.every=3", "train.log_every=1",
         "checkpoint.uri=null", "train.ema_decay=0.9"]


def make_workspace(path: Path) -> Path:
    """A folder laid out like the repository root for `unigen`: recipes/, cluster_profiles/ and the
    synthetic corpus in unigen-data/shapes."""
    path.mkdir(parents=True, exist_ok=True)
    for name in ("recipes", "cluster_profiles"):
        shutil.copytree(ROOT / name, path / name, dirs_exist_ok=True)
    out = cli(path, "data", "synth", "--out", "unigen-data/shapes", check=True)
    assert "manifest.json" in out.stdout + out.stderr
    return path


def cli_env(run_root: Path | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    if run_root is not None:
        env["UNIGEN_RUN_ROOT"] = str(run_root)
    env.update(extra)
    return env


def _argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "unigen.orchestrator.cli", *args]


def cli(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 900,
        check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(_argv(*args), cwd=cwd, env=env or cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its ranks live in their own groups: they get SIGTERM on its death
        stdout, stderr = proc.communicate()
        raise AssertionError(f"unigen {' '.join(args)} ran over {timeout} s\n{stdout[-3000:]}\n{stderr[-3000:]}")
    out = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    if check and out.returncode != 0:
        raise AssertionError(f"unigen {' '.join(args)} exited {out.returncode}\n{out.stdout}\n{out.stderr}")
    return out


def start_cli(cwd: Path, *args: str, env: dict[str, str] | None = None, log: Path) -> subprocess.Popen:
    """`unigen ...` in the background (its own session, so a test can signal it as a terminal would)."""
    fh = open(log, "ab")
    return subprocess.Popen(_argv(*args), cwd=cwd, env=env or cli_env(), stdout=fh, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def run_dirs(run_root: Path) -> list[Path]:
    """Run folders under ``run_root``, oldest first."""
    records = sorted((json.loads(p.read_text())["created_at"], p.parent) for p in run_root.glob("*/run.json"))
    return [d for _, d in records]


def record(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "run.json").read_text())


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def losses_by_step(run_dir: Path) -> dict[int, float]:
    """The loss of every step, from its LAST attempt (replayed steps are logged again)."""
    return {row["step"]: row["loss"] for row in metrics(run_dir)}


def exported_tensors(run_dir: Path) -> dict[str, Any]:
    from unigen.model.export_layout import export_tensors

    return export_tensors(run_dir / "export")


def assert_same_tensors(a: dict[str, Any], b: dict[str, Any]) -> None:
    import torch

    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def wait_for(check, timeout: float, what: str, interval: float = 0.05) -> None:
    if not wait_until(check, timeout, interval):
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def current_attempt(run_dir: Path) -> dict[str, Any] | None:
    try:
        attempts = record(run_dir).get("attempts") or []
    except (OSError, ValueError):
        return None
    return attempts[-1] if attempts else None


def rank_pids(run_dir: Path, attempt: int) -> list[int]:
    """The pids of the ranks of ``attempt`` once all are recorded and alive."""
    a = current_attempt(run_dir)
    if not a or a["attempt"] != attempt or not a.get("pids"):
        return []
    return [p for p in a["pids"] if pid_alive(p)]


def kill_ranks(pids: list[int], sig: int = signal.SIGKILL) -> None:
    """Signal each rank's process group (a rank leads its own group, with its data workers)."""
    for pid in pids:
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass


def stop(proc: subprocess.Popen, timeout: float = 60) -> None:
    """Stop a background `unigen` (SIGTERM: ranks save, then it exits), SIGKILL its group if it hangs."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def saving_now(run_dir: Path) -> bool:
    """A checkpoint folder exists that has no COMMIT.json yet: a save is in progress."""
    for step_dir in (run_dir / "checkpoints").glob("step-*"):
        if step_dir.is_dir() and not (step_dir / "COMMIT.json").exists():
            return True
    return False


def elapsed(start: float) -> str:
    return f"{time.monotonic() - start:.0f} s"


def assert_matches_reference(run_dir: Path, reference_run: Path) -> None:
    """Completed, every logged step (replays included) equal to the reference bit for bit, and the
    same exported weights."""
    assert record(run_dir)["status"] == "completed", record(run_dir).get("error")
    ref = losses_by_step(reference_run)
    for row in metrics(run_dir):
        assert row["loss"] == ref[row["step"]], f"step {row['step']} (attempt {row['attempt']}) differs"
    assert losses_by_step(run_dir) == ref
    assert_same_tensors(exported_tensors(run_dir), exported_tensors(reference_run))


def stop_run_at(run_dir: Path, *, keep_up_to: int, forget_mlflow: bool = False) -> Path:
    """Make a finished run look as if it had stopped after checkpoint ``keep_up_to``: later local
    checkpoints, their metrics and the export removed, status failed (so `unigen resume` takes it)."""
    from unigen.orchestrator.runs import RunLedger

    for step_dir in (run_dir / "checkpoints").glob("step-*"):
        if int(step_dir.name.split("-")[1]) > keep_up_to:
            shutil.rmtree(step_dir)
    shutil.rmtree(run_dir / "export", ignore_errors=True)
    rows = [r for r in metrics(run_dir) if r["step"] <= keep_up_to]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def change(r):
        r.update(status="failed", export=None, error="stopped by the test")
        r["progress"]["step"] = keep_up_to
        if forget_mlflow:  # a copy must not log into the original's MLflow run
            r["mlflow"] = {"tracking_uri": None, "experiment_id": None, "run_id": None, "parent_run_id": None}

    RunLedger(run_dir).update(change)
    return run_dir
