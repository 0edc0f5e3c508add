"""The baseline side of bench/train_step.py, its ablation, and the printed tables (imported by it)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

ALL_PARTS = ["backbone", "connector", "dit"]


def run_baseline(path: str, args) -> list[dict]:
    """Run the peer baseline once per batch size, each in its own process (memory is freed between)."""
    results = []
    for rows in args.batches:
        cmd = [sys.executable, path, "--batch", str(rows), "--steps", str(args.steps), "--text-len", str(args.text_len)]
        if args.small:
            cmd.append("--small")
        env = dict(os.environ, OMP_NUM_THREADS="1") if not torch.cuda.is_available() else None
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.baseline_timeout, env=env)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            result = json.loads(lines[-1]) if lines else {"error": f"exit {proc.returncode}: {proc.stderr[-400:]}"}
        except subprocess.TimeoutExpired:
            result = {"error": "timeout"}
        result.setdefault("batch", rows)
        result["row"] = "baseline"
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


def load_baseline(path: str, *, small: bool, text_len: int) -> list[dict]:
    """The baseline rows of an earlier ``--json`` file, checked to be comparable (same sizes, same prompt)."""
    try:
        with open(path) as fh:
            saved = json.load(fh)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err
    rows = saved.get("baseline") if isinstance(saved, dict) else None
    if not rows or not isinstance(rows, list):
        raise ValueError(f"{path} holds no baseline rows (write it with --baseline ... --json {path})")
    header = saved.get("header", {})
    if bool(header.get("small")) != small or header.get("text_len", text_len) != text_len:
        raise ValueError(f"{path} was measured with small={header.get('small')}, text_len={header.get('text_len')}; "
                         f"this run has small={small}, text_len={text_len}: ratios would compare different steps")
    return rows


def baseline_flops(config, rows: int, text_len: int) -> float:
    """Model FLOPs of the baseline's step by the same formulas as ours (its own FlopCounterMode figure
    charges depthwise-conv backward as dense: see unigen.model.flops): a backward through every one of its
    text_len + queries positions, the DC-AE encode, connector and DiT."""
    from unigen.model.flops import step_flops

    batch = {"input_ids": torch.zeros(rows, text_len + config.num_queries, dtype=torch.long),
             "gen_slot_has_target": torch.ones(rows, dtype=torch.bool), "gen_pixel_values": torch.zeros(1)}
    return step_flops(config, batch, split=False).total


def ablation(model, step, args, peak, measure, set_ckpt, best: dict) -> list[dict]:
    """At the largest batch: everything on, every switch off alone, then all off (the baseline's recipe in
    unigen). ``args.ablate_rounds`` rounds interleave the variants and keep each one's fastest round, so a
    load that drifts over minutes (a shared CPU) does not favour whichever variant ran in a quiet moment."""
    from step_setup import make_batch

    rows = best["batch"]
    device = str(model.device)
    start = best.get("ckpt", [])
    chain = [start] + [p for p in ([["backbone"], ["backbone", "dit"], ALL_PARTS]) if len(p) > len(start)]
    variants = [
        ("all on (the row above)", {}),
        ("- frozen prefix (backward through the prompt)", {"prefix": False}),
        ("- precomputed latents (DC-AE every step)", {"online": True}),
        ("- bf16 frozen weights (fp32 backbone + VAE)", {"fp32_frozen": True}),
        ("+ gradient checkpointing of every part", {"ckpt": True}),
        ("all off (the baseline's recipe, unigen code)", {"prefix": False, "online": True,
                                                          "fp32_frozen": True, "ckpt": True}),
    ]
    if model.vae.dtype == torch.float32:  # frozen weights are float32 already (the CPU default)
        variants = [(n, {k: v for k, v in c.items() if k != "fp32_frozen"}) for n, c in variants
                    if c != {"fp32_frozen": True}]
    kept: dict[str, dict] = {}
    for _ in range(args.ablate_rounds):
        for name, change in variants:
            result = _variant(model, step, args, peak, measure, name, change, rows, device, chain, make_batch)
            if result.get("samples_per_s", 0) >= kept.get(name, {}).get("samples_per_s", -1):
                kept[name] = result
    set_ckpt(model, start)
    results = [kept[name] for name, _ in variants]
    reference = kept[variants[0][0]].get("samples_per_s")
    for result in results:
        if reference and "samples_per_s" in result:
            result["vs_all_on"] = round(result["samples_per_s"] / reference, 3)
    return results


def _variant(model, step, args, peak, measure, name, change, rows, device, chain, make_batch) -> dict:
    prefix_before = model.config.frozen_prefix_cache
    if "prefix" in change:
        model.config.frozen_prefix_cache = False
    if change.get("fp32_frozen"):
        frozen_dtype = model.vae.dtype
        model.backbone.to(torch.float32)
        model.vae.to(torch.float32)
    try:
        batch = make_batch(model.config, rows, args.text_len, online=change.get("online", args.online_latents),
                           device=device)
        plan = [ALL_PARTS] if change.get("ckpt") else chain
        return measure(f"ablation: {name}", step, model, batch, args, peak, plan, steps=args.ablate_steps)
    finally:
        model.config.frozen_prefix_cache = prefix_before
        if change.get("fp32_frozen"):
            model.backbone.to(frozen_dtype)
            model.vae.to(frozen_dtype)


def _cell(result: dict | None, key: str, fmt: str = "{}") -> str:
    if not result:
        return "-"
    if result.get("error"):
        return result["error"]
    value = result.get(key)
    return "-" if value is None else fmt.format(value)


def render(header: dict, baseline: list[dict], ours: list[dict], config) -> str:
    """Markdown tables: baseline vs unigen per batch size (ratio = samples/s over the baseline's), and the
    ablation (samples/s of each switch off, relative to everything on)."""
    peak = header.get("matmul_peak_tflops")
    lines = [f"device {header['device']}, {header['date']}, torch {header['torch']}, bf16 matmul peak "
             f"{peak} TFLOP/s, prompt {header['text_len']} tokens + {config.num_queries} queries"
             + (" (--small shapes)" if header.get("small") else "")
             + (", model.compile_blocks on (regional torch.compile)" if config.compile_blocks else ""), ""]
    base = {r["batch"]: r for r in baseline}
    torch_rows = {r["batch"]: r for r in ours if r["row"] == "unigen torch"}
    ds_rows = {r["batch"]: r for r in ours if r["row"] == "unigen deepspeed zero3"}
    lines.append("| batch | baseline samples/s | unigen torch samples/s | ratio | unigen ZeRO-3 samples/s | ratio "
                 "| peak GiB base / torch / ZeRO-3 | MFU base / torch / ZeRO-3 | ckpt torch |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for rows in sorted(set(base) | set(torch_rows) | set(ds_rows)):
        b, t, d = base.get(rows), torch_rows.get(rows), ds_rows.get(rows)
        ratio = lambda r: (f"{r['samples_per_s'] / b['samples_per_s']:.2f}x"  # noqa: E731
                           if r and b and r.get("samples_per_s") and b.get("samples_per_s") else "-")
        base_mfu = "-"
        if b and b.get("step_s") and peak:
            base_mfu = f"{baseline_flops(config, rows, header['text_len']) / b['step_s'] / (peak * 1e12):.3f}"
        lines.append(f"| {rows} | {_cell(b, 'samples_per_s')} | {_cell(t, 'samples_per_s')} | {ratio(t)} | "
                     f"{_cell(d, 'samples_per_s')} | {ratio(d)} | {_cell(b, 'peak_mem_gib')} / "
                     f"{_cell(t, 'peak_mem_gib')} / {_cell(d, 'peak_mem_gib')} | {base_mfu} / {_cell(t, 'mfu')} / "
                     f"{_cell(d, 'mfu')} | {','.join(t.get('ckpt', [])) or 'none' if t else '-'} |")
    if any(r.get("clock") == "thread cpu time" for r in ours):
        lines += ["", "CPU: unigen's rows are in thread CPU time, the baseline's in wall time (its own timer), so "
                      "the ratio compares different clocks; only the GPU ratio counts."]
    ablations = [r for r in ours if r["row"].startswith("ablation")]
    if ablations:
        lines += ["", f"| at batch {ablations[0]['batch']} | samples/s | vs all on | ckpt | peak GiB |",
                  "|---|---|---|---|---|"]
        for r in ablations:
            lines.append(f"| {r['row'][len('ablation: '):]} | {_cell(r, 'samples_per_s')} | {_cell(r, 'vs_all_on')} | "
                         f"{','.join(r.get('ckpt', [])) or 'none'} | {_cell(r, 'peak_mem_gib')} |")
    return "\n".join(lines)
