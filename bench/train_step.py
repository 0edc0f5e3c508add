"""Times unigen's own training step (the real UniGenModel, optimizer step included) at unigen-3b shapes.

    .venv/bin/python bench/train_step.py --small                      # CPU, seconds: the script stays alive
    .venv/bin/python bench/train_step.py --small --ablate --baseline ../shared/bench/peer_metaquery_step.py
    python3 bench/train_step.py --ablate --baseline .bench/peer_metaquery_step.py   # one GPU: see runbooks/performance.md

Rows, each at every --batches size: ``torch`` = UniGenModel + torch AdamW (fused on CUDA) on fp32 trainable
weights under bf16 autocast (the baseline's setting), ``deepspeed`` = the same model under the runtime's
DeepSpeed ZeRO-3 engine on one device (config from unigen.orchestrator.deepspeed_config, the runtime's
torch AdamW, bf16 on CUDA). Each prints samples/s, peak memory and MFU: model FLOPs (unigen.model.flops;
checked against a FlopCounterMode step) over the bf16 matmul peak measured in the same run.

The step's switches (each measured by --ablate at the largest batch, one at a time, then all together):
frozen_prefix_cache (no backward through the prompt), precomputed latents (no DC-AE per step),
frozen_dtype=bfloat16 (frozen weights stored bf16), gradient checkpointing (--ckpt; 'auto' keeps every
activation and recomputes part by part only when memory runs out). --baseline runs the peer script at the
same batch sizes first, in its own processes, and prints both rows side by side with the ratio;
--baseline-from reuses the baseline rows of an earlier --json file (a second run, e.g. --compile, in the same
device call).
On a CPU, unigen's times are this thread's CPU time (torch on one thread), not wall time: see
step_setup.timed. Speed figures belong here, never in tests.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":  # before anything imports deepspeed: its accelerator is chosen once
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

import step_setup as S  # noqa: E402
import step_table  # noqa: E402

CKPT_FALLBACK = [[], ["backbone"], ["backbone", "dit"], ["backbone", "connector", "dit"]]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="tiny sizes (the baseline's --small), seconds on a CPU")
    p.add_argument("--batches", default=None, help="comma-separated batch sizes (default 8,16,32; --small: 2)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 8; --small: 2)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before each measurement")
    p.add_argument("--text-len", type=int, default=96, help="prompt tokens before the slot (baseline: 96)")
    p.add_argument("--rows", default="torch,deepspeed", help="which rows: torch, deepspeed (comma-separated)")
    p.add_argument("--ckpt", default="auto", help="gradient checkpointing: auto | none | all | parts, e.g. backbone,dit")
    p.add_argument("--online-latents", action="store_true", help="encode pixel targets with the DC-AE every step")
    p.add_argument("--no-frozen-prefix", action="store_true", help="backward through the whole prompt")
    p.add_argument("--frozen-dtype", default=None, choices=["bfloat16", "float32"],
                   help="dtype of the frozen backbone and DC-AE (default bfloat16 on CUDA, float32 on a CPU, "
                        "whose bf16 kernels are slower)")
    p.add_argument("--ablate", action="store_true", help="measure each switch off, one at a time, at the largest batch")
    p.add_argument("--ablate-steps", type=int, default=None, help="timed steps per ablation variant (default --steps)")
    p.add_argument("--ablate-rounds", type=int, default=None,
                   help="interleaved rounds of the ablation, fastest kept (default 1 on CUDA, 3 on a CPU)")
    p.add_argument("--compile", action="store_true",
                   help="model.compile_blocks: torch.compile each connector layer and DiT block (torch row only: "
                        "the deepspeed row is ZeRO-3, under which the runtime refuses it)")
    p.add_argument("--no-count", action="store_true", help="skip the FlopCounterMode cross-check of the formula")
    p.add_argument("--baseline", default=None, help="path of peer_metaquery_step.py: run it too, print the ratio")
    p.add_argument("--baseline-from", default=None, metavar="JSON",
                   help="take the baseline's rows from an earlier --json file of the same device call instead of "
                        "running it again (bench/gpu_run.sh's compile run)")
    p.add_argument("--baseline-timeout", type=int, default=300, help="seconds per baseline process")
    p.add_argument("--json", default=None, help="also write every result to this file")
    args = p.parse_args(argv)
    args.batches = [int(b) for b in (args.batches or ("2" if args.small else "8,16,32")).split(",")]
    args.steps = args.steps or (2 if args.small else 8)
    args.ablate_steps = args.ablate_steps or args.steps
    args.ablate_rounds = args.ablate_rounds or (1 if DEVICE == "cuda" else 3)
    args.rows = [r for r in args.rows.split(",") if r]
    args.frozen_dtype = args.frozen_dtype or ("bfloat16" if DEVICE == "cuda" else "float32")
    unknown = set(args.rows) - {"torch", "deepspeed"}
    if unknown:
        p.error(f"--rows: unknown {sorted(unknown)}; choose from torch, deepspeed")
    if args.baseline and args.baseline_from:
        p.error("--baseline and --baseline-from: give one (run the baseline, or reuse its rows)")
    args.baseline_rows = []
    if args.baseline_from:
        try:
            args.baseline_rows = step_table.load_baseline(args.baseline_from, small=args.small, text_len=args.text_len)
        except ValueError as err:
            p.error(f"--baseline-from: {err}")
    if args.compile and "deepspeed" in args.rows:
        p.error("--compile: ZeRO-3's parameter hooks break every compiled block into per-layer graphs (the "
                "runtime refuses model.compile_blocks under zero_stage 3): add --rows torch")
    return args


def ckpt_plan(spec: str) -> list[list[str]]:
    """Checkpointing settings to try in order (auto: fastest first, more recomputation after an OOM)."""
    if spec == "auto":
        return CKPT_FALLBACK if DEVICE == "cuda" else [[]]
    if spec == "none":
        return [[]]
    return [["backbone", "connector", "dit"] if spec == "all" else spec.split(",")]


def set_ckpt(model, parts: list[str]) -> None:
    model.disable_gradient_checkpointing()
    if parts:
        model.enable_gradient_checkpointing(parts)


def torch_optimizer(model):
    """The runtime's optimizer (build_optimizer): its parameter groups, fused AdamW on CUDA like the baseline's."""
    from unigen.orchestrator.runtime.build import build_optimizer

    return build_optimizer(model, train_section(1), device=DEVICE)


def train_section(batch: int):
    """The recipe's train section of these rows: AdamW lr 1e-4, weight decay 0.05; one micro-batch of ``batch``."""
    from unigen.orchestrator.config.recipe import TrainSection

    return TrainSection(max_steps=1, global_batch_size=batch, micro_batch_size=batch, lr=1e-4, weight_decay=0.05,
                        grad_clip=1.0, precision="bf16" if DEVICE == "cuda" else "fp32")


def model_flops(model, batch: dict) -> float:
    from unigen.model.flops import step_flops

    return step_flops(model.config, {k: v.cpu() for k, v in batch.items()}).total


def counted_flops(model, batch: dict) -> float:
    """FlopCounterMode over one forward + backward at batch <= 2, without recomputation, scaled up."""
    from unigen.model.flops import flop_counter

    rows = batch["input_ids"].shape[0]
    small = {k: v[:2] for k, v in batch.items()}
    saved = _ckpt_state(model)
    set_ckpt(model, [])
    with flop_counter() as counter:
        model(**small).loss.backward()
    model.zero_grad(set_to_none=True)
    set_ckpt(model, saved)
    return counter.get_total_flops() * rows / small["input_ids"].shape[0]


def _ckpt_state(model) -> list[str]:
    parts = []
    if getattr(model.backbone.model.language_model.layers[0], "gradient_checkpointing", False):
        parts.append("backbone")
    if model.connector.gradient_checkpointing:
        parts.append("connector")
    if getattr(model.dit, "gradient_checkpointing", False):
        parts.append("dit")
    return parts


def measure(name: str, step, model, batch: dict, args, peak: float | None, plan: list[list[str]],
            steps: int | None = None) -> dict:
    """One row at one batch size, trying the checkpointing plan until a setting fits in memory."""
    rows = batch["input_ids"].shape[0]
    result = {"row": name, "batch": rows}
    for parts in plan:
        set_ckpt(model, parts)
        try:
            result.update(S.timed(step, batch, steps=steps or args.steps, warmup=args.warmup, device=DEVICE),
                          ckpt=parts)
            break
        except Exception as err:  # noqa: BLE001
            if not S.is_oom(err):
                raise
            result.update(error="OOM", ckpt=parts)
        finally:
            model.zero_grad(set_to_none=True)
            S.free_memory(DEVICE)
    if "samples_per_s" in result:
        result.pop("error", None)
        flops = model_flops(model, batch)
        result["flops_per_step"] = flops
        result["tflop_per_step"] = float(f"{flops / 1e12:.4g}")
        result["achieved_tflops"] = float(f"{flops / result['step_s'] / 1e12:.4g}")
        result["mfu"] = round(flops / result["step_s"] / peak, 3) if peak else None
    print(json.dumps(result), flush=True)
    return result


def torch_rows(model, args, peak) -> list[dict]:
    optimizer = torch_optimizer(model)

    def step(batch):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    results, plan = [], ckpt_plan(args.ckpt)
    for rows in args.batches:
        batch = S.make_batch(model.config, rows, args.text_len, online=args.online_latents, device=DEVICE)
        result = measure("unigen torch", step, model, batch, args, peak, plan)
        if not (args.no_count or args.compile) and "samples_per_s" in result:  # dynamo vs a dispatch mode
            counted = counted_flops(model, batch)
            result["counted_over_formula"] = round(counted / result["flops_per_step"], 4)
            print(json.dumps({"row": "flop check", "batch": rows, **{k: result[k] for k in ("counted_over_formula",)}}))
        results.append(result)
    if args.ablate:
        results += step_table.ablation(model, step, args, peak, measure, set_ckpt, results[-1])
    optimizer.state.clear()  # its moments are 2 x 3.2B floats: free them before the DeepSpeed row
    S.free_memory(DEVICE)
    return results


def deepspeed_rows(model, args, peak) -> list[dict]:
    """The runtime's engine on one device: ZeRO-3, its DeepSpeed config and torch AdamW."""
    import deepspeed

    from unigen.orchestrator.config.recipe import DeepSpeedSection
    from unigen.orchestrator.deepspeed_config import build_deepspeed_config
    from unigen.orchestrator.runtime.build import build_optimizer
    from unigen.orchestrator.runtime.distributed import RankContext, init_distributed

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    init_distributed(RankContext.from_env())
    top = max(args.batches)
    train = train_section(top)
    set_ckpt(model, [])
    optimizer = build_optimizer(model, train, device=DEVICE)
    config = build_deepspeed_config(train, DeepSpeedSection(zero_stage=3), 1, gpus=DEVICE == "cuda")
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)

    def step(batch):
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()
        return loss.detach()

    results, plan = [], ckpt_plan(args.ckpt)
    for rows in args.batches:  # ZeRO-3 fixes the batch only in its bookkeeping; the engine takes any size
        batch = S.make_batch(model.config, rows, args.text_len, online=args.online_latents, device=DEVICE)
        results.append(measure("unigen deepspeed zero3", step, model, batch, args, peak, plan))
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    if DEVICE == "cpu":  # one thread, as the runtime runs each CPU rank: steadier on a shared machine
        torch.set_num_threads(1)
    header = {"device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
              "date": datetime.date.today().isoformat(), "torch": torch.__version__, "small": args.small,
              "text_len": args.text_len, "argv": sys.argv[1:]}
    results = {"header": header, "baseline": [], "unigen": []}

    def save() -> None:  # after every phase: a run stopped at its time limit keeps what it measured
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(results, fh, indent=1)

    if args.baseline:
        results["baseline"] = step_table.run_baseline(args.baseline, args)
        save()
    else:
        results["baseline"] = args.baseline_rows
    peak = S.matmul_peak_flops(DEVICE)
    header["matmul_peak_tflops"] = round(peak / 1e12, 1) if peak else None
    config = S.bench_config(args.small, autocast=DEVICE == "cuda", frozen_dtype=args.frozen_dtype)
    config.frozen_prefix_cache = not args.no_frozen_prefix
    config.compile_blocks = args.compile
    model = S.build_model(config, DEVICE)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    header.update(params_total=total, params_trainable=trainable, params_total_B=round(total / 1e9, 3),
                  params_trainable_B=round(trainable / 1e9, 3))
    print(json.dumps(header), flush=True)
    phases = ([torch_rows] if "torch" in args.rows else []) + ([deepspeed_rows] if "deepspeed" in args.rows else [])
    for phase in phases:
        try:
            results["unigen"] += phase(model, args, peak)
        except Exception as err:  # noqa: BLE001 - report it with the rows measured so far
            print(f"error: {phase.__name__}: {type(err).__name__}: {err}", flush=True)
            results["unigen"].append({"row": phase.__name__, "batch": 0, "error": f"{type(err).__name__}: {err}"})
            S.free_memory(DEVICE)
        save()
    print(step_table.render(header, results["baseline"], results["unigen"], config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
