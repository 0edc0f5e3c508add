"""Benchmark: what the `unigen` front costs and what the smoke pipeline takes on this machine.

Prints:
  `unigen --help` wall time (best of --repeats; goal < 0.3 s: no torch/mlflow/deepspeed at import)
  the whole smoke pipeline: `unigen data synth` + both smoke stages with the README's command
  time per training step of the tiny preset (from stage 1's metrics.jsonl, steady state)
  each stage's loss at the start and at the end (first and last 10 steps, averaged)
  each stage's held-out val_loss at its first and last evaluation, and the seconds an evaluation took

    python bench/cli_and_smoke.py                 # the README's pipeline, full smoke recipes (~20 min)
    python bench/cli_and_smoke.py --steps 60      # shorter: train.max_steps overridden on both stages
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def unigen(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unigen.orchestrator.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


def help_time(repeats: int) -> float:
    script = Path(sys.executable).with_name("unigen")
    cmd = [str(script), "--help"] if script.is_file() else [sys.executable, "-m", "unigen.orchestrator.cli", "--help"]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        best = min(best, time.perf_counter() - start)
    return best


def run_pipeline(work: Path, steps: int | None) -> tuple[float, float, list[Path]]:
    for name in ("recipes", "cluster_profiles"):
        shutil.copytree(ROOT / name, work / name)
    env = dict(os.environ, UNIGEN_RUN_ROOT=str(work / "unigen-runs"))
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    out = unigen("data", "synth", "--out", "unigen-data/shapes", cwd=work, env=env)
    if out.returncode:
        sys.exit(f"unigen data synth failed:\n{out.stderr}")
    synth_s = time.perf_counter() - start
    extra = [f"train.max_steps={steps}", "train.warmup_steps=5"] if steps else []
    out = unigen("submit", "recipes/smoke-pretrain.yaml", "recipes/smoke-instruct.yaml", "--profile", "local",
                 "--wait", *extra, cwd=work, env=env)
    total_s = time.perf_counter() - start
    if out.returncode:
        sys.exit(f"the smoke pipeline failed:\n{out.stdout}\n{out.stderr[-3000:]}")
    runs = sorted((json.loads(p.read_text())["created_at"], p.parent) for p in (work / "unigen-runs").glob("*/run.json"))
    return synth_s, total_s, [d for _, d in runs]


def stage_figures(run_dir: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steady = [r["step_time_s"] for r in rows[5:]] or [r["step_time_s"] for r in rows]
    n = min(10, max(1, len(rows) // 4))
    return {"steps": len(rows), "step_s": statistics.median(steady),
            "data_wait_pct": 100 * statistics.median(r["data_wait_s"] / r["step_time_s"] for r in rows[5:] or rows),
            "loss_start": statistics.mean(r["loss"] for r in rows[:n]),
            "loss_end": statistics.mean(r["loss"] for r in rows[-n:]), **eval_figures(run_dir)}


def eval_figures(run_dir: Path) -> dict[str, float]:
    """The evaluations of a run (eval.jsonl; runbooks/evaluation.md): first and last val_loss, median time."""
    path = run_dir / "eval.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    rows = [r for r in rows if "val_loss" in r]
    if not rows:
        return {}
    return {"val_first_step": rows[0]["step"], "val_first": rows[0]["val_loss"], "val_last_step": rows[-1]["step"],
            "val_last": rows[-1]["val_loss"], "eval_s": statistics.median(r["eval_s"] for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, help="override train.max_steps of both stages")
    ap.add_argument("--repeats", type=int, default=5, help="runs of `unigen --help` (best one counts)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder and print its path")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="unigen-bench-"))
    try:
        help_s = help_time(args.repeats)
        synth_s, total_s, runs = run_pipeline(work, args.steps)
        print(f"{'figure':<44} value")
        print(f"{'unigen --help (best of %d)' % args.repeats:<44} {help_s:.3f} s")
        print(f"{'unigen data synth':<44} {synth_s:.1f} s")
        print(f"{'whole smoke pipeline (synth + 2 stages)':<44} {total_s:.1f} s")
        for run_dir in runs:
            f = stage_figures(run_dir)
            name = run_dir.name.rsplit("-", 3)[0]
            print(f"{name + ': steps':<44} {f['steps']}")
            print(f"{name + ': time per step (median, tiny, 2 ranks)':<44} {f['step_s']:.3f} s")
            print(f"{name + ': data wait (median share of step)':<44} {f['data_wait_pct']:.1f} %")
            print(f"{name + ': loss first 10 -> last 10 steps':<44} {f['loss_start']:.4f} -> {f['loss_end']:.4f}")
            if "val_first" in f:
                print(f"{name + ': held-out val_loss (first -> last eval)':<44} {f['val_first']:.4f} (step "
                      f"{f['val_first_step']}) -> {f['val_last']:.4f} (step {f['val_last_step']})")
                print(f"{name + ': time per evaluation (median)':<44} {f['eval_s']:.1f} s")
    finally:
        if args.keep:
            print(f"work folder: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
