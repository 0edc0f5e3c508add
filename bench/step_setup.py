"""Shapes, batches and measurement helpers of bench/train_step.py (imported by it; not a script).

The full shapes are unigen-3b's (Qwen2.5-VL-3B, 256 queries, 24-layer connector, Sana-1.6B at 512 px,
DC-AE f32c32) with random weights built from the preset's configs; ``small`` mirrors the --small sizes of
the peer baseline (../shared/bench/peer_metaquery_step.py), so both scripts measure the same tiny problem
on a CPU too.
"""
from __future__ import annotations

import copy
import gc
import time

import torch

from unigen.model.config import UniGenConfig, get_preset
from unigen.model.presets import DCAE_F32C32, SANA_1600M_512

SMALL_VOCAB = 1000


def bench_config(small: bool, *, autocast: bool, frozen_dtype: str | None) -> UniGenConfig:
    """unigen-3b (or its small stand-in) with random weights, float32 trainable parts, no CFG dropout
    (the baseline has none; dropout only hides tokens, it never changes the work)."""
    common = dict(backbone_source=None, decoder_source=None, dtype="float32", autocast=autocast,
                  frozen_dtype=frozen_dtype, cfg_drop_text=0.0, cfg_drop_image=0.0, cfg_drop_both=0.0,
                  gradient_checkpointing=False)
    if not small:
        return get_preset("unigen-3b", **common)
    base = get_preset("unigen-3b")
    backbone = copy.deepcopy(base.backbone_config)
    backbone["text_config"].update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=SMALL_VOCAB,
                                   rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
                                   bos_token_id=SMALL_VOCAB - 5, eos_token_id=SMALL_VOCAB - 4)
    backbone.update(bos_token_id=SMALL_VOCAB - 5, eos_token_id=SMALL_VOCAB - 4)
    backbone["vision_config"].update(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                                     fullatt_block_indexes=[1])
    dit = dict(SANA_1600M_512, num_attention_heads=2, attention_head_dim=16, num_layers=2, num_cross_attention_heads=2,
               cross_attention_head_dim=16, cross_attention_dim=32, caption_channels=48, sample_size=4)
    vae = dict(DCAE_F32C32, encoder_block_out_channels=[8, 8, 16, 16, 32, 32],
               decoder_block_out_channels=[8, 8, 16, 16, 32, 32], encoder_layers_per_block=[1] * 6,
               decoder_layers_per_block=[1] * 6, encoder_block_types="ResBlock", decoder_block_types="ResBlock",
               downsample_block_type="pixel_unshuffle", upsample_block_type="pixel_shuffle")
    return get_preset("unigen-3b", **common, backbone_config=backbone, dit_config=dit, vae_config=vae,
                      image_size=128, connector_layers=2, connector_head_dim=64,
                      image_gen_start_token_id=SMALL_VOCAB - 3, image_gen_pad_token_id=SMALL_VOCAB - 2,
                      image_gen_end_token_id=SMALL_VOCAB - 1)


def build_model(config: UniGenConfig, device: str):
    """The real UniGenModel, built directly on the device when it can be (random init on a GPU takes
    seconds, on the host a minute at 3B)."""
    from unigen.model import UniGenModel

    try:
        with torch.device(device):
            model = UniGenModel(config)
    except Exception as err:  # noqa: BLE001 - any failure of the on-device build: build on the host instead
        print(f"note: building on {device} failed ({type(err).__name__}: {err}); building on the host")
        model = UniGenModel(config).to(device)
    return model.train()


def make_batch(config: UniGenConfig, batch: int, text_len: int, *, online: bool, device: str,
               seed: int = 0) -> dict:
    """A text-to-image batch as UniGenProcessor returns it: ``text_len`` prompt tokens, then one slot
    (start, num_queries pads, end) with a target: precomputed latents, or pixels the step encodes."""
    gen = torch.Generator().manual_seed(seed)
    q = config.num_queries
    vocab = config.backbone_config["text_config"]["vocab_size"]
    prompt = torch.randint(0, min(vocab, config.image_gen_start_token_id) - 1, (batch, text_len), generator=gen)
    slot = torch.tensor([config.image_gen_start_token_id] + [config.image_gen_pad_token_id] * q
                        + [config.image_gen_end_token_id]).expand(batch, -1)
    ids = torch.cat([prompt, slot], dim=1)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
           "gen_slot_has_target": torch.ones(batch, dtype=torch.bool)}
    side = config.image_size // config.vae_compression
    if online:
        out["gen_pixel_values"] = torch.rand(batch, 3, config.image_size, config.image_size, generator=gen) * 2 - 1
    else:
        out["gen_latents"] = torch.randn(batch, config.latent_channels, side, side, generator=gen)
    return {k: v.to(device) for k, v in out.items()}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def free_memory(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def timed(step, batch: dict, *, steps: int, warmup: int, device: str) -> dict:
    """Seconds per step, samples/s and peak memory of ``step(batch)``, a full optimizer step.

    On a GPU: wall time, the mean over ``steps`` back-to-back steps (as the baseline times them, no sync
    between steps). On a CPU: the CPU time of this thread (torch runs one thread here), the fastest step:
    on a machine shared with other jobs, wall time measures their load more than this step's work."""
    for _ in range(warmup):
        step(batch)
    sync(device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    clock = time.perf_counter if cuda else time.thread_time
    times, begin = [], clock()
    for _ in range(steps):
        start = clock()
        loss = step(batch)
        times.append(clock() - start)
    sync(device)
    seconds = (clock() - begin) / steps if cuda else min(times)
    rows = batch["input_ids"].shape[0]
    return {"step_s": round(seconds, 4), "samples_per_s": round(rows / seconds, 2), "loss": float(loss),
            "clock": "wall" if cuda else "thread cpu time",
            "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if cuda else None}


def matmul_peak_flops(device: str) -> float | None:
    """bf16 matmul FLOP/s measured here (8192^3, as the baseline measures it); None off GPU."""
    if not device.startswith("cuda"):
        return None
    x = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    y = torch.randn_like(x)
    for _ in range(3):
        x @ y
    sync(device)
    start = time.perf_counter()
    for _ in range(20):
        x @ y
    sync(device)
    return 20 * 2 * 8192**3 / (time.perf_counter() - start)


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()
