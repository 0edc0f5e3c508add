"""Loader throughput on the synthetic shapes corpus: samples/s per rank, per worker count.

    /work/venv/bin/python bench/data_loader.py                      # writes the corpus to a temp dir
    /work/venv/bin/python bench/data_loader.py --data unigen-data/shapes --workers 0 2 --steps 30
    /work/venv/bin/python bench/data_loader.py --collate processor  # + the tiny model's processor

Samples/s here is what the loader can deliver; the training step's consumption (and so the data wait
as a share of step time) is measured by the training benchmark that sits beside this one.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


def measure(spec, collate, *, steps: int, global_batch: int, micro_batch: int, warmup: int = 2) -> dict:
    """Time ``steps`` optimizer steps (after ``warmup``, which also starts the workers)."""
    from unigen.model.data.loader import build_loader
    loader = build_loader(spec, collate, seed=0, global_batch_size=global_batch, micro_batch_size=micro_batch,
                          rank=0, world_size=1)
    for _ in range(warmup):
        loader.next_step()
    start = time.perf_counter()
    for _ in range(steps):
        loader.next_step()
    elapsed = time.perf_counter() - start
    loader.close()
    return {"samples_per_s": steps * global_batch / elapsed, "step_s": elapsed / steps,
            "bad": loader.stats()["bad"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="corpus folder written by `unigen data synth` (default: write one to a temp dir)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers to try")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--global-batch", type=int, default=16)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--collate", choices=["none", "processor"], default="none",
                    help="none: conversations pass through; processor: the tiny model's UniGenProcessor")
    args = ap.parse_args(argv)
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
    collate, size = (lambda convs: convs), args.image_size
    if args.collate == "processor":
        from unigen.model import UniGenPipeline
        pipe = UniGenPipeline.from_preset("tiny")
        collate, size = pipe.processor, pipe.model.config.image_size
    print(f"corpus {root}: 16 sources, image_size {size}, global batch {args.global_batch}, "
          f"micro-batch {args.micro_batch}, collate {args.collate}, {os.cpu_count()} CPUs")
    for workers in args.workers:
        spec = DataSpec(sources=sources_for(root), image_size=size, num_workers=workers, prefetch_factor=4)
        r = measure(spec, collate, steps=args.steps, global_batch=args.global_batch, micro_batch=args.micro_batch)
        print(f"  workers={workers}: {r['samples_per_s']:8.1f} samples/s  ({r['step_s'] * 1000:7.1f} ms per "
              f"step of {args.global_batch}), bad records {r['bad']}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
