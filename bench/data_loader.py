"""Loader throughput on the synthetic shapes corpus next to what the tiny model's training step consumes.

    .venv/bin/python bench/data_loader.py                        # writes the corpus to a temp dir
    .venv/bin/python bench/data_loader.py --data unigen-data/shapes --workers 0 1 2 --steps 30

Three figures, each printed as it is measured:
1. loader alone: samples/s the loader delivers (conversations collated by the tiny model's processor, as
   the runtime collates them), per DataLoader worker count;
2. training alone: samples/s one tiny-model optimizer step consumes (forward, backward, AdamW) on batches
   prepared beforehand, so no data wait at all;
3. both together: the training loop pulling its steps from the loader, as the runtime does; the time
   spent waiting in ``next_step`` as a share of the step time (the target is below 5 %).
Speed figures belong here, never in tests. Threads default to 1 per process, as the runtime sets
OMP_NUM_THREADS=1 per rank; on a shared machine run it when the machine is otherwise idle.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time


def loader_for(spec, collate, args, seed=0):
    from unigen.model.data.loader import build_loader
    return build_loader(spec, collate, seed=seed, global_batch_size=args.global_batch,
                        micro_batch_size=args.micro_batch, rank=0, world_size=1)


def loader_alone(spec, collate, args) -> dict:
    """Steps/s of the loader with nothing else running (after warm-up, which also starts the workers)."""
    loader = loader_for(spec, collate, args)
    for _ in range(args.warmup):
        loader.next_step()
    start = time.perf_counter()
    for _ in range(args.steps):
        loader.next_step()
    elapsed = time.perf_counter() - start
    bad = loader.stats()["bad"]
    loader.close()
    return {"samples_per_s": args.steps * args.global_batch / elapsed, "step_s": elapsed / args.steps, "bad": bad}


def train_step(model, optimizer, micro_batches) -> None:
    for batch in micro_batches:
        (model(**batch).loss / len(micro_batches)).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def training_alone(pipe, spec, args) -> dict:
    """The tiny step's own speed: batches are loaded first, then only the step is timed."""
    import torch
    loader = loader_for(spec, pipe.processor, args, seed=1)
    steps = [loader.next_step() for _ in range(args.warmup + args.steps)]
    loader.close()
    model = pipe.model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    for micro_batches in steps[:args.warmup]:
        train_step(model, optimizer, micro_batches)
    times = []
    for micro_batches in steps[args.warmup:]:
        t0 = time.perf_counter()
        train_step(model, optimizer, micro_batches)
        times.append(time.perf_counter() - t0)
    mean = statistics.fmean(times)
    return {"samples_per_s": args.global_batch / mean, "step_s": mean}


def both_together(pipe, spec, args) -> dict:
    """The runtime's loop: wait for the step's micro-batches, then train on them."""
    import torch
    loader = loader_for(spec, pipe.processor, args, seed=2)
    model = pipe.model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    for _ in range(args.warmup):
        train_step(model, optimizer, loader.next_step())
    waits, totals = [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        micro_batches = loader.next_step()
        t1 = time.perf_counter()
        train_step(model, optimizer, micro_batches)
        waits.append(t1 - t0)
        totals.append(time.perf_counter() - t0)
    loader.close()
    return {"wait_share": sum(waits) / sum(totals), "step_s": statistics.fmean(totals),
            "wait_ms_median": 1000 * statistics.median(waits), "wait_ms_max": 1000 * max(waits)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="corpus folder written by `unigen data synth` (default: write one to a temp dir)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader workers to try")
    ap.add_argument("--train-workers", type=int, default=1, help="workers for the training run (default 1, as "
                    "the smoke recipes: 2 cores shared by 2 ranks)")
    ap.add_argument("--prefetch", type=int, default=4, help="prefetch_factor: steps queued per worker")
    ap.add_argument("--steps", type=int, default=20, help="timed optimizer steps per measurement")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--global-batch", type=int, default=8, help="default 8, as the smoke recipes")
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the runtime uses 1 per rank)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    torch.set_num_threads(args.threads)
    from unigen.model import UniGenPipeline
    from unigen.model.data.spec import DataSpec
    from unigen.model.data.synth.layout import sources_for
    from unigen.model.data.synth.writers import write_corpus
    tmp = None
    root = args.data
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="unigen-bench-data-")
        root = tmp.name
        write_corpus(root, seed=0)
    os.environ.setdefault("UNIGEN_DATA_CACHE", os.path.join(root, ".index-cache"))
    torch.manual_seed(0)
    pipe = UniGenPipeline.from_preset("tiny")
    size = pipe.model.config.image_size

    def spec(workers):
        return DataSpec(sources=sources_for(root), image_size=size, num_workers=workers, prefetch_factor=args.prefetch)

    print(f"corpus {root}: {len(sources_for(root))} sources, image_size {size}, global batch {args.global_batch}, "
          f"micro-batch {args.micro_batch}, collate = the tiny model's UniGenProcessor, torch threads "
          f"{args.threads}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print("1. loader alone")
    for workers in args.workers:
        r = loader_alone(spec(workers), pipe.processor, args)
        print(f"   workers={workers}: {r['samples_per_s']:8.1f} samples/s ({r['step_s'] * 1000:6.1f} ms per step "
              f"of {args.global_batch}), bad records {r['bad']}")
    r = training_alone(pipe, spec(0), args)
    print(f"2. tiny training step alone: {r['samples_per_s']:8.1f} samples/s consumed "
          f"({r['step_s'] * 1000:6.1f} ms per step of {args.global_batch})")
    r = both_together(pipe, spec(args.train_workers), args)
    verdict = "below" if r["wait_share"] < 0.05 else "ABOVE"
    print(f"3. training from the loader (workers={args.train_workers}): data wait {r['wait_share']:.1%} of step "
          f"time ({verdict} the 5 % target); step {r['step_s'] * 1000:.1f} ms, wait median "
          f"{r['wait_ms_median']:.2f} ms, max {r['wait_ms_max']:.1f} ms")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
