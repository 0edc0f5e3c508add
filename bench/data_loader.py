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
With ``--real-size`` it measures instead what a unigen-3b run feeds a GPU: img2dataset-style shards of
512 px JPEGs (text-to-image, and edit pairs whose input image goes through Qwen2.5-VL's image processor at
unigen-3b's settings), read by unigen's loader and, interleaved with it, by a plain ``webdataset`` pipeline
(the peer: decode, resize and crop, to tensor, the same image-processor call, a torch DataLoader):

    .venv/bin/python bench/data_loader.py --real-size --workers 0 1 2 --steps 10

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

from torch.utils.data import IterableDataset


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


# -- real size: 512 px JPEG shards, unigen's loader next to a plain webdataset pipeline ----------------------
REAL_SHARDS = 4  # per source: at least the most workers tried, so webdataset's per-worker shard split has work
WORDS = ("a red fox on a snowy hill at dusk with soft light over pine trees a small boat near an old harbour "
         "wall under grey clouds two children flying a kite in a wide green field").split()


def photo_like(rng, width: int, height: int):
    """A picture that compresses like a photo, not like a flat synthetic scene: smooth colour fields
    (low-frequency noise, upscaled), a few shapes, and fine grain (about 60-120 KB at 512 px, quality 90)."""
    import numpy as np
    from PIL import Image, ImageDraw
    img = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height),
                                                                                 Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 8))):
        x0, y0 = int(rng.integers(0, width * 3 // 4)), int(rng.integers(0, height * 3 // 4))
        w, h = int(rng.integers(width // 10, width // 2)), int(rng.integers(height // 10, height // 2))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x0 + w, y0 + h), fill=fill)
    grain = rng.normal(0.0, 6.0, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(img, np.float32) + grain, 0, 255).astype(np.uint8))


def write_real_corpus(root: str, size: int, records: int, seed: int = 0) -> None:
    """img2dataset-style shards: t2i/<shard>.tar with <key>.jpg/.txt/.json, and edit/<shard>.tar with
    <key>.source.jpg/.target.jpg/.txt (an InstructPix2Pix pair as a WebDataset sample). Pictures have a
    short side of ``size`` and mixed aspect ratios, so the loader's resize and crop do real work."""
    import io
    import json
    import tarfile
    import numpy as np
    rng = np.random.default_rng(seed)
    shapes = [(size, size), (size * 5 // 4, size), (size, size * 3 // 2)]

    def jpeg(img) -> bytes:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        return buf.getvalue()

    def add(tar, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    for task in ("t2i", "edit"):
        os.makedirs(os.path.join(root, task), exist_ok=True)
        for shard in range(REAL_SHARDS):
            with tarfile.open(os.path.join(root, task, f"{shard:05d}.tar"), "w") as tar:
                for i in range(shard, records, REAL_SHARDS):
                    key = f"{shard:05d}{i:05d}"
                    width, height = shapes[int(rng.integers(len(shapes)))]
                    text = " ".join(rng.choice(WORDS, int(rng.integers(8, 24)))).encode()
                    if task == "t2i":
                        add(tar, f"{key}.jpg", jpeg(photo_like(rng, width, height)))
                        add(tar, f"{key}.txt", text)
                        add(tar, f"{key}.json", json.dumps({"key": key, "width": width, "height": height}).encode())
                    else:
                        add(tar, f"{key}.source.jpg", jpeg(photo_like(rng, width, height)))
                        add(tar, f"{key}.target.jpg", jpeg(photo_like(rng, width, height)))
                        add(tar, f"{key}.txt", b"make it look like " + text)


def real_urls(root: str, task: str) -> str:
    return f"{root}/{task}/{{00000..{REAL_SHARDS - 1:05d}}}.tar"


def real_sources(root: str) -> list:
    from unigen.model.data.spec import SourceSpec
    return [SourceSpec(uri=real_urls(root, "t2i"), format="webdataset", task="t2i"),
            SourceSpec(uri=real_urls(root, "edit"), format="webdataset", task="edit",
                       fields={"source": "source.jpg", "target": "target.jpg", "instruction": "txt"})]


def real_size_processor(image_size: int):
    """The committed tiny tokenizer for text (the Qwen one cannot be downloaded here), and Qwen2-VL's image
    processor with unigen-3b's patch, merge and pixel limits, its 256 queries and max_length: the images
    and token counts are those of a unigen-3b run; only the text's token ids differ."""
    from unigen.model.config import get_preset
    from unigen.model.processor import UniGenProcessor
    real = get_preset("unigen-3b")
    config = get_preset("tiny", image_size=image_size, num_queries=real.num_queries, max_length=real.max_length,
                        input_min_pixels=real.input_min_pixels, input_max_pixels=real.input_max_pixels)
    processor = UniGenProcessor.from_config(config)
    ip, vision = processor.image_processor, real.backbone_config["vision_config"]
    got = (ip.patch_size, ip.merge_size, ip.temporal_patch_size, ip.size.shortest_edge, ip.size.longest_edge)
    want = (vision["patch_size"], vision["spatial_merge_size"], vision["temporal_patch_size"],
            real.input_min_pixels, real.input_max_pixels)
    if got != want:
        raise SystemExit(f"image processor (patch, merge, temporal patch, min, max pixels) {got} differs from "
                         f"unigen-3b's {want}")
    return processor


def input_grid(processor, image_size: int) -> list:
    from PIL import Image
    return processor.image_processor(images=[Image.new("RGB", (image_size, image_size))],
                                     return_tensors="pt")["image_grid_thw"][0].tolist()


class PeerSample:
    """The peer's per-sample step, after webdataset decoded the JPEGs to PIL: short side to the target size
    and centre crop, target to a [-1, 1] tensor, text to token ids; the input image stays PIL for the batch's
    image-processor call, as unigen's collate does it."""

    def __init__(self, size: int, tokenizer):
        self.size, self.tokenizer = size, tokenizer

    def __call__(self, sample: dict) -> dict:
        from unigen.model.images import center_square, to_pixels
        target = sample["jpg"] if "jpg" in sample else sample["target.jpg"]
        source = sample.get("source.jpg")
        return {"ids": self.tokenizer(sample["txt"], add_special_tokens=False)["input_ids"],
                "target": to_pixels(target, self.size),
                "source": None if source is None else center_square(source, self.size)}


class PeerCollate:
    def __init__(self, image_processor, pad_id: int):
        self.image_processor, self.pad_id = image_processor, pad_id

    def __call__(self, samples: list) -> dict:
        import torch
        length = max(len(s["ids"]) for s in samples)
        ids = torch.full((len(samples), length), self.pad_id, dtype=torch.long)
        for row, s in enumerate(samples):
            ids[row, length - len(s["ids"]):] = torch.tensor(s["ids"])
        batch = {"input_ids": ids, "targets": torch.stack([s["target"] for s in samples])}
        sources = [s["source"] for s in samples if s["source"] is not None]
        if sources:
            out = self.image_processor(images=sources, return_tensors="pt")
            batch["pixel_values"], batch["image_grid_thw"] = out["pixel_values"], out["image_grid_thw"]
        return batch


def task_order(spec, args) -> list:
    """The source (0 t2i, 1 edit) of each sample unigen's mixture plans for the measured steps: the peer
    follows it, so both pipelines decode the same share of edit pairs (two pictures and an image-processor
    call each, about twice a text-to-image sample); seed 0 plans 60 % edits for the first 80 samples."""
    from unigen.model.data.mixture import Mixture, MixtureState
    from unigen.model.data.sources import open_sources
    sources = open_sources(spec)
    mixture = Mixture([s.name for s in sources], [s.spec.weight for s in sources], [len(s) for s in sources], 0)
    state, order = MixtureState(), []
    for _ in range(args.warmup + args.steps):
        items, state = mixture.plan(state, args.global_batch, keep=range(args.global_batch))
        order += [item.source for item in items]
    return order


class ScheduledMix(IterableDataset):
    """An endless iterable over the peer's pipelines that takes each next sample from the one ``order``
    names (webdataset's RandomMix with unigen's draws instead of its own)."""

    def __init__(self, parts: list, order: list):
        self.parts, self.order = parts, order

    def __iter__(self):
        streams = [iter(part) for part in self.parts]
        k = 0
        while True:
            yield next(streams[self.order[k % len(self.order)]])
            k += 1


def peer_loader(root: str, processor, size: int, workers: int, args, order: list):
    """Plain webdataset: both sources endless (resampled shards), mixed in unigen's planned order, decoded,
    mapped, and batched by a torch DataLoader at micro-batch size."""
    import webdataset as wds
    from torch.utils.data import DataLoader
    step = PeerSample(size, processor.tokenizer)
    parts = [wds.WebDataset(real_urls(root, task), resampled=True, shardshuffle=False, seed=0)
             .decode("pil").map(step) for task in ("t2i", "edit")]
    mix = ScheduledMix(parts, order)
    extra = {"prefetch_factor": args.prefetch * (args.global_batch // args.micro_batch),
             "persistent_workers": True} if workers else {}
    return DataLoader(mix, batch_size=args.micro_batch, num_workers=workers,
                      collate_fn=PeerCollate(processor.image_processor, processor.tokenizer.pad_token_id or 0),
                      **extra)


def peer_alone(root, processor, size, workers, args, order) -> dict:
    """Samples/s of the peer, counted in micro-batches of the same size as unigen's steps are made of."""
    per_step = args.global_batch // args.micro_batch
    it = iter(peer_loader(root, processor, size, workers, args, order))
    for _ in range(args.warmup * per_step):
        next(it)
    start = time.perf_counter()
    for _ in range(args.steps * per_step):
        next(it)
    elapsed = time.perf_counter() - start
    shutdown = getattr(it, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
    return {"samples_per_s": args.steps * args.global_batch / elapsed}


def real_size(args) -> int:
    """Part 1 at real size: unigen's loader and the peer, interleaved (unigen then peer at each worker count,
    ``--rounds`` times) so the shared machine's load falls on both alike; one table, then the workers a
    GPU at ``--gpu-rate`` samples/s needs."""
    import importlib.util
    import math
    if importlib.util.find_spec("webdataset") is None:
        raise SystemExit("--real-size needs the webdataset package (the peer): pip install -e '.[bench]'")
    from unigen.model.data.spec import DataSpec
    size = args.image_size
    tmp = None
    root = args.data
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="unigen-bench-real-")
        root = tmp.name
    if not os.path.exists(os.path.join(root, "edit", f"{REAL_SHARDS - 1:05d}.tar")):
        t0 = time.perf_counter()
        write_real_corpus(root, size, args.records)
        print(f"wrote {args.records} t2i + {args.records} edit records at {size} px "
              f"in {time.perf_counter() - t0:.1f} s")
    os.environ.setdefault("UNIGEN_DATA_CACHE", os.path.join(root, ".index-cache"))
    processor = real_size_processor(size)
    jpeg_kb = os.path.getsize(os.path.join(root, "t2i", "00000.tar")) / 1024 / max(1, args.records // REAL_SHARDS)
    print(f"corpus {root}: t2i + edit (input image + target), {REAL_SHARDS} shards each, ~{jpeg_kb:.0f} KB per "
          f"t2i sample; image_size {size}, input image grid (t, h, w) {input_grid(processor, size)} "
          f"(unigen-3b's Qwen2.5-VL image processor settings), global batch {args.global_batch}, micro-batch "
          f"{args.micro_batch}, torch threads {args.threads}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}")

    def spec(workers):
        return DataSpec(sources=real_sources(root), image_size=size, num_workers=workers,
                        prefetch_factor=args.prefetch)

    order = task_order(spec(0), args)
    print(f"both pipelines read {order.count(1)} edit pairs among {len(order)} samples (unigen's plan, seed 0)")
    rates: dict = {(who, w): [] for who in ("unigen", "peer") for w in args.workers}
    bad = 0
    for _ in range(args.rounds):
        for workers in args.workers:
            r = loader_alone(spec(workers), processor, args)
            rates[("unigen", workers)].append(r["samples_per_s"])
            bad += r["bad"]
            rates[("peer", workers)].append(peer_alone(root, processor, size, workers, args, order)["samples_per_s"])
    print(f"samples/s (mean of {args.rounds} interleaved rounds; load average now {os.getloadavg()[0]:.2f}; "
          f"unigen bad records {bad})")
    print(f"{'workers':>8} {'unigen':>9} {'webdataset':>11} {'unigen/peer':>12}")
    for workers in args.workers:
        u, p = (statistics.fmean(rates[(who, workers)]) for who in ("unigen", "peer"))
        print(f"{workers:>8} {u:>9.1f} {p:>11.1f} {u / p:>12.2f}")
    one = [w for w in args.workers if w >= 1]
    if one:
        per_worker = statistics.fmean(rates[("unigen", min(one))]) / min(one)
        print(f"one unigen worker: {per_worker:.1f} samples/s -> a GPU at {args.gpu_rate:g} samples/s needs "
              f"{math.ceil(args.gpu_rate / per_worker)} workers (one free core each)")
    if tmp is not None:
        tmp.cleanup()
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="corpus folder written by `unigen data synth`, or with --real-size by an earlier "
                    "--real-size run (written there when missing); default: a temp dir")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader workers to try")
    ap.add_argument("--train-workers", type=int, default=1, help="workers for the training run (default 1, as "
                    "the smoke recipes: 2 cores shared by 2 ranks)")
    ap.add_argument("--prefetch", type=int, default=4, help="prefetch_factor: steps queued per worker")
    ap.add_argument("--steps", type=int, default=20, help="timed optimizer steps per measurement")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--global-batch", type=int, default=8, help="default 8, as the smoke recipes")
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the runtime uses 1 per rank)")
    real = ap.add_argument_group("real size (--real-size): 512 px JPEG shards, unigen next to plain webdataset")
    real.add_argument("--real-size", action="store_true", help="measure the loader on real-size shards (t2i + "
                      "edit pairs) next to a plain webdataset pipeline, instead of parts 1-3")
    real.add_argument("--image-size", type=int, default=512, help="short side of the written pictures and the "
                      "target size (default 512, unigen-3b's)")
    real.add_argument("--records", type=int, default=64, help="records written per source (default 64)")
    real.add_argument("--rounds", type=int, default=2, help="interleaved unigen/peer rounds averaged (default 2)")
    real.add_argument("--gpu-rate", type=float, default=40.0, help="samples/s one GPU trains at (default 40)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    torch.set_num_threads(args.threads)
    if args.real_size:
        return real_size(args)
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
