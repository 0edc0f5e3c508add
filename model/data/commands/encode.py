"""``unigen data encode``: precompute DC-AE latents of every generation target of a source.

Targets are produced exactly as training produces them (same adapter, same square fit at the model's
image size), encoded with ``UniGenModel.encode_latents`` in batches, and stored by (record key, slot)
(see ``unigen.model.data.latents``). Point the source's ``options.latents`` at the output folder;
training then passes them to the model instead of encoding each step. Re-run after changing the
model's VAE or ``data.image_size``. Records that are bad here are skipped (they are bad in training too).
"""
from __future__ import annotations

import sys
import time

import numpy as np

from unigen.model.data.commands.check import convert


def load_pipeline(args):
    from unigen.model import UniGenPipeline
    if args.pretrained:
        return UniGenPipeline.from_pretrained(args.pretrained), args.pretrained
    return UniGenPipeline.from_preset(args.preset), f"preset:{args.preset}"


def run(args) -> int:
    import torch

    from unigen.model.data.cli import source_from_args
    from unigen.model.data.latents import LatentWriter
    from unigen.model.data.sources import open_source
    pipe, model_name = load_pipeline(args)
    model = pipe.model.to(args.device).eval()
    size = int(model.config.image_size)
    if args.image_size not in (None, size):
        raise ValueError(f"--image-size {args.image_size} differs from the model's image_size {size}; "
                         "latents must match the size the model trains at (leave --image-size out)")
    spec = source_from_args(args)
    src = open_source(spec, size, where="source")
    writer = LatentWriter(args.out)
    pending: list[tuple[str, int, np.ndarray]] = []
    bad, done, start = [], 0, time.time()
    total = len(src) if not args.limit else min(args.limit, len(src))

    def flush():
        if not pending:
            return
        pixels = torch.from_numpy(np.stack([p for _, _, p in pending])).permute(0, 3, 1, 2)
        with torch.no_grad():
            latents = model.encode_latents(pixels).cpu().numpy()
        for (key, slot, _), lat in zip(pending, latents):
            writer.add(key, slot, lat)
        pending.clear()

    for i in range(total):
        conv, key, _, reason = convert(src, i)
        if reason is not None:
            bad.append((key, reason))
            continue
        targets = [it["image"] for m in conv for it in m["content"] if it["type"] == "image_gen" and it.get("image")]
        for slot, img in enumerate(targets):
            # The processor's pixels: RGB / 127.5 - 1, the image already size x size from the adapter.
            pending.append((key, slot, np.asarray(img.convert("RGB"), np.float32) / 127.5 - 1.0))
            if len(pending) >= args.batch_size:
                flush()
        done += 1
    flush()
    meta = writer.close({"image_size": size, "model": model_name, "vae_sha256": model.vae_fingerprint(),
                         "source": spec.uri, "task": spec.task, "records": done})
    print(f"encoded {meta['count']} targets of {done} records of {src.name} into {args.out} "
          f"({meta['latent_shape']} {meta['dtype']}) in {time.time() - start:.1f}s; {len(bad)} bad records skipped")
    for key, reason in bad[:10]:
        print(f"  bad {key}: {reason}", file=sys.stderr)
    print(f"use it: options: {{latents: {args.out}}} on this source (every source of the recipe needs latents)")
    return 0
