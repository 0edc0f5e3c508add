"""Benchmark: peak host memory (RSS) per rank of building a model under ZeRO-3, plain against partitioned.

For each build and rank count it starts that many CPU ranks (gloo), and each rank runs what a training
attempt runs first: build the model through the runtime's build_pipeline, deepspeed.initialize with a torch
AdamW, one training step. Each rank reports its peak RSS (getrusage ru_maxrss, the high-water mark so far)
after each of the three phases.
  plain        the whole model on every rank (frozen parts + every trainable parameter), partitioned by
               deepspeed.initialize afterwards: forced with build_pipeline(..., partitioned=False)
  partitioned  trainable parts created under deepspeed.zero.Init (unigen.model.zero_init): a rank only
               ever holds its shard of them; the frozen parts whole
The table shows the ranks' largest peak (they differ little) and the model's sizes for comparison.

    python bench/host_memory.py                                  # medium preset, 1 and 2 ranks, both builds
    python bench/host_memory.py --preset tiny --ranks 1 2 --builds partitioned --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.* helpers
GIB = 2 ** 30


def peak_rss_bytes() -> int:
    """This process's peak resident set so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# DeepSpeed's default buckets (reduce 5e8 elements: a 2 GiB fp32 buffer per CPU rank, prefetch 5e7) would
# dwarf a medium model's states; these keep the engine's own buffers small, so the table shows the model.
BUCKET = int(2e7)


def zero3_config(world: int, precision: str) -> dict:
    """The runtime's ZeRO-3 settings for CPU ranks (unigen.orchestrator.deepspeed_config), micro batch 1,
    with small communication buckets (see BUCKET)."""
    return {"train_batch_size": world, "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
            "gradient_clipping": 1.0, "bf16": {"enabled": precision == "bf16"}, "fp16": {"enabled": False},
            "zero_optimization": {"stage": 3, "contiguous_gradients": True, "overlap_comm": False,
                                  "stage3_gather_16bit_weights_on_model_save": False,
                                  "reduce_bucket_size": BUCKET, "stage3_prefetch_bucket_size": BUCKET},
            "zero_allow_untested_optimizer": True, "steps_per_print": 2 ** 31 - 1}


def rank_main(rank: int, world: int, port: str, build: str, preset: str, precision: str, report: str) -> None:
    """One rank: build, initialize, one step; writes its peaks as JSON."""
    import datetime

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=port, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    import deepspeed
    import torch

    from tests.unit.model.model_helpers import seed_example
    from unigen.orchestrator.config.recipe import ModelSection
    from unigen.orchestrator.runtime.build import build_pipeline
    from unigen.orchestrator.runtime.distributed import _skip_cpu_shm_op

    torch.set_num_threads(1)
    _skip_cpu_shm_op()
    deepspeed.init_distributed(dist_backend="gloo", timeout=datetime.timedelta(seconds=600), verbose=False)
    peaks = {"start": peak_rss_bytes()}
    ds_config = zero3_config(world, precision)
    torch.manual_seed(0)
    pipe = build_pipeline(ModelSection(preset=preset), None, ds_config=ds_config, partitioned=build == "partitioned")
    peaks["build"] = peak_rss_bytes()
    model = pipe.model
    # foreach=False: the default foreach AdamW allocates temporaries the size of the rank's whole shard at
    # the step (the same for both builds), which would hide the construction's difference.
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, foreach=False)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    peaks["initialize"] = peak_rss_bytes()
    torch.manual_seed(rank)
    out = engine(**pipe.processor([seed_example()]))
    engine.backward(out.loss)
    engine.step()
    peaks["step"] = peak_rss_bytes()
    with open(report, "w") as fh:
        json.dump({"peaks": peaks, "loss": float(out.loss)}, fh)
    torch.distributed.destroy_process_group()


def run(build: str, world: int, preset: str, precision: str, folder: Path) -> list[dict]:
    """Start ``world`` ranks of one build; each rank's report."""
    from tests.services.ports import free_port

    port, procs, reports = str(free_port()), [], []
    for rank in range(world):
        report = folder / f"{build}-{world}-{rank}.json"
        reports.append(report)
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--rank-of", str(rank), str(world), port, build, preset, precision,
             str(report)], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for proc in procs:
        text = proc.communicate(timeout=1800)[0]
        if proc.returncode != 0:
            raise SystemExit(f"{build} build on {world} ranks failed:\n{text[-3000:]}")
    return [json.loads(r.read_text()) for r in reports]


def model_sizes(preset: str) -> tuple[float, float]:
    """(frozen, trainable) parameters in millions, from the config (nothing built)."""
    from unigen.model.config import get_preset

    counts = get_preset(preset).parameter_counts()
    return (counts["total"] - counts["trainable"]) / 1e6, counts["trainable"] / 1e6


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--rank-of":
        rank, world, port, build, preset, precision, report = sys.argv[2:9]
        return rank_main(int(rank), int(world), port, build, preset, precision, report)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--builds", nargs="+", default=["plain", "partitioned"], choices=["plain", "partitioned"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    frozen, trainable = model_sizes(args.preset)
    print(f"preset {args.preset}: {frozen:.0f}M frozen + {trainable:.0f}M trainable parameters, "
          f"ZeRO-3, {args.precision}, CPU ranks (gloo); peak RSS per rank in GiB (largest over the ranks)")
    print(f"{'build':<12} {'ranks':>5} {'after build':>12} {'after init':>11} {'after step':>11}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for world in args.ranks:
            for build in args.builds:
                reports = run(build, world, args.preset, args.precision, Path(tmp))
                peak = {f"after_{phase}_gib": max(r["peaks"][phase] for r in reports) / GIB
                        for phase in ("build", "initialize", "step")}
                rows.append({"build": build, "ranks": world, **peak, "losses": [r["loss"] for r in reports]})
                print(f"{build:<12} {world:>5} {peak['after_build_gib']:>12.2f} {peak['after_initialize_gib']:>11.2f} "
                      f"{peak['after_step_gib']:>11.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"preset": args.preset, "precision": args.precision,
                                               "frozen_m": frozen, "trainable_m": trainable, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
