"""The local runtime against a plain PyTorch loop of the same model, data and optimizer, on this machine.

    .venv/bin/python bench/runtime_vs_plain.py                       # writes a corpus to a temp dir
    .venv/bin/python bench/runtime_vs_plain.py --data unigen-data/shapes --steps 150

The plain loop is what a researcher would write by hand: the recipe's model (build_pipeline), its data
(build_loader over the recipe's sources, one process, the recipe's worker count), the runtime's own AdamW
(build_optimizer), forward / backward / step, torch using every core. The runtime rows are `unigen submit
--profile local --wait` with the recipe and the setup's overrides; their figure is samples over wall time
between two logged steps after warm-up (metrics.jsonl ``wall_s``), so it includes everything the runtime
does per step (reporting, logging, checkpoints if due), not only the step itself. Speed figures belong
here, never in tests; run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# name -> overrides of the recipe for `unigen submit` (the README's setup first)
SETUPS = {
    "2 ranks, no ZeRO (README)": ["profile.local.cpu_ranks=2", "train.micro_batch_size=16"],
    "1 rank, no ZeRO": ["profile.local.cpu_ranks=1", "train.micro_batch_size=32"],
    "2 ranks, ZeRO-3 (tests)": ["profile.local.cpu_ranks=2", "deepspeed.zero_stage=3", "train.micro_batch_size=16"],
}


def plain_loop(recipe, steps: int, warmup: int) -> float:
    """Samples per second of a hand-written loop over the model, data and optimizer of ``recipe`` (a Recipe)."""
    import torch

    from unigen.model.data.loader import build_loader
    from unigen.orchestrator.runtime.build import build_optimizer, build_pipeline

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    pipe = build_pipeline(recipe.model, init_weights=None)
    train = recipe.train
    loader = build_loader(recipe.data, pipe.processor, seed=0, global_batch_size=train.global_batch_size,
                          micro_batch_size=train.micro_batch_size, rank=0, world_size=1)
    model = pipe.model.train()
    optimizer = build_optimizer(model, train)
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        micro = loader.next_step()
        for batch in micro:
            (model(**batch).loss / len(micro)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    elapsed = time.perf_counter() - start
    loader.close()
    return steps * train.global_batch_size / elapsed


def runtime(work: Path, recipe_path: str, overrides: list[str], steps: int, warmup: int) -> float:
    """Samples per second of `unigen submit` between logged step ``warmup`` and the last step."""
    root = work / f"runs-{len(list(work.glob('runs-*')))}"
    env = dict(os.environ, UNIGEN_RUN_ROOT=str(root))
    env.pop("MLFLOW_TRACKING_URI", None)
    common = [f"train.max_steps={warmup + steps}", "train.warmup_steps=1", "train.log_every=1", "eval.every=0", "checkpoint.every=100000",
              "checkpoint.uri=null"]
    out = subprocess.run([sys.executable, "-m", "unigen.orchestrator.cli", "submit", recipe_path, "--profile", "local",
                          "--wait", *common, *overrides], cwd=work, env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"unigen submit {' '.join(overrides)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    (run_dir,) = [p.parent for p in root.glob("*/run.json")]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    batch = json.loads((run_dir / "run.json").read_text())["recipe"]["train"]["global_batch_size"]
    first, last = rows[warmup - 1], rows[-1]
    return (last["step"] - first["step"]) * batch / (last["wall_s"] - first["wall_s"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="corpus written by `unigen data synth` (default: write one to a temp dir)")
    ap.add_argument("--recipe", default="recipes/smoke-pretrain.yaml")
    ap.add_argument("--steps", type=int, default=100, help="timed optimizer steps per row")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--setups", nargs="*", choices=list(SETUPS), default=list(SETUPS))
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from unigen.orchestrator.config.resolve import load_recipe

    with tempfile.TemporaryDirectory(prefix="unigen-bench-runtime-") as tmp:
        work = Path(tmp)
        for name in ("recipes", "cluster_profiles"):
            shutil.copytree(ROOT / name, work / name)
        data = work / "unigen-data" / "shapes"
        if args.data:
            data.parent.mkdir(parents=True)
            data.symlink_to(Path(args.data).resolve())
        else:
            subprocess.run([sys.executable, "-m", "unigen.orchestrator.cli", "data", "synth", "--out", str(data),
                            "--scale", "16"], check=True, capture_output=True)
        os.chdir(work)
        recipe = load_recipe(args.recipe)
        print(f"{args.recipe} (model {recipe.model.preset}, global batch {recipe.train.global_batch_size}), "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, {args.steps} timed steps each", flush=True)
        plain = plain_loop(recipe, args.steps, args.warmup)
        print(f"{'plain PyTorch loop (same model, data, optimizer)':48s} {plain:8.1f} samples/s", flush=True)
        for name in args.setups:
            value = runtime(work, args.recipe, SETUPS[name], args.steps, args.warmup)
            print(f"{'unigen submit, ' + name:48s} {value:8.1f} samples/s   plain / runtime = {plain / value:.2f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
