"""Text shown by ``unigen validate`` and ``unigen submit --dry-run``: what a submission resolved to."""
from __future__ import annotations

import dataclasses
import json

import yaml

from unigen.orchestrator.config import ResolvedStage, Submission
from unigen.orchestrator.config.inherit import display_path


def _yaml(data) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=110, allow_unicode=True).rstrip()


def _indent(text: str, pad: str = "    ") -> str:
    return "\n".join(pad + line if line else line for line in text.splitlines())


def header_lines(sub: Submission) -> list[str]:
    """Profile, world size and run root."""
    p = sub.profile
    kind = "GPU ranks" if sub.world.gpus else "CPU ranks"
    lines = [f"profile: {p.name} ({display_path(sub.profile_path)}), launcher {p.launcher}",
             f"world size: {sub.world_size} {kind} ({sub.world.why})",
             f"run root: {sub.run_root}"]
    if sub.name:
        lines.append(f"run name: {sub.name}")
    return lines


def _init_text(stage: ResolvedStage) -> str:
    if stage.starts_from_previous:
        return f"set at launch to stage {stage.index - 1}'s run (run:<its id>)"
    return stage.recipe.init_from or "none (fresh start from the preset/pretrained weights)"


def stage_lines(stage: ResolvedStage, sub: Submission) -> list[str]:
    """The summary lines of one stage (batch arithmetic, init, hash)."""
    t = stage.recipe.train
    return [f"stage {stage.index}: {display_path(stage.path)}  [{stage.recipe.stage}]  name {stage.recipe.name}",
            f"  global batch {t.global_batch_size} = micro {t.micro_batch_size} x accumulation {stage.accumulation} "
            f"x world {sub.world_size}",
            f"  steps {t.max_steps} (warmup {t.warmup_steps}), lr {t.lr:g} -> {t.lr * t.min_lr_ratio:g} cosine, "
            f"{t.precision}, ZeRO {stage.recipe.deepspeed.zero_stage}"
            + (f", weight average (ema_decay {t.ema_decay:g})" if t.ema_decay else ""),
            f"  init_from: {_init_text(stage)}",
            f"  eval: {_eval_text(stage)}",
            f"  recipe sha256: {stage.recipe_sha256}"]


def _eval_text(stage: ResolvedStage) -> str:
    ev = stage.recipe.eval
    if not ev.every:
        return "off (eval.every: 0)"
    parts = []
    if ev.sources:
        parts.append(f"val_loss on {ev.samples} held-out samples ({', '.join(s.label() for s in ev.sources)})")
    if ev.prompts:
        parts.append(f"{len(ev.prompts)} sample prompt(s) at {ev.num_inference_steps} steps")
    if ev.suites:
        parts.append(f"suites {', '.join(ev.suites)} ({ev.suite_samples} cases each)")
    return f"every {ev.every} steps and at the end: " + ", ".join(parts)


def deepspeed_text(stage: ResolvedStage, sub: Submission) -> str:
    """The generated DeepSpeed config of a stage, as JSON."""
    from unigen.orchestrator.deepspeed_config import build_deepspeed_config

    return json.dumps(build_deepspeed_config(stage.recipe.train, stage.recipe.deepspeed, sub.world_size,
                                             gpus=sub.world.gpus), indent=2)


def memory_lines(stage: ResolvedStage, sub: Submission) -> list[str]:
    """The memory estimate of a stage on the submission's profile."""
    from unigen.model.config import UniGenConfig
    from unigen.orchestrator.estimate import checkpointing_of, dims_from_config, render

    counts = UniGenConfig.from_dict(stage.model_config).parameter_counts()
    dims = dims_from_config(stage.model_config, counts, max_length=stage.recipe.data.max_length)
    dims = dataclasses.replace(dims, averaged=stage.recipe.train.ema_decay is not None)
    return render(dims, zero_stage=stage.recipe.deepspeed.zero_stage, data_parallel=sub.world_size,
                  micro_batch=stage.recipe.train.micro_batch_size, precision=stage.recipe.train.precision,
                  checkpointing=checkpointing_of(stage.model_config), gpus=sub.world.gpus,
                  gpu_memory_gb=sub.profile.resources.gpu_memory_gb, **host_inputs(stage, sub))


def host_inputs(stage: ResolvedStage, sub: Submission) -> dict:
    """What the host-memory estimate needs from the profile and the DeepSpeed overrides: ranks per node
    (unknown on Ray, whose workers the cluster places), the node's memory, and what DeepSpeed offloads."""
    profile = sub.profile
    per_node = {"local": sub.world_size, "slurm": profile.resources.node_ranks}.get(profile.launcher)
    zero = (stage.recipe.deepspeed.config or {}).get("zero_optimization") or {}
    offloaded = {key: ((zero.get(key) or {}).get("device") or "none") != "none"
                 for key in ("offload_optimizer", "offload_param")}
    return {"ranks_per_node": per_node or None, "node_memory_gb": profile.resources.mem_gb, **offloaded}


def describe(sub: Submission, *, full: bool, memory: bool, profile_yaml: bool) -> str:
    """Everything about a submission: header, per stage summary (+ resolved recipe, DeepSpeed config,
    memory estimate when ``full`` / ``memory``), and the resolved profile when ``profile_yaml``."""
    out = header_lines(sub)
    if profile_yaml:
        out += ["resolved profile:", _indent(_yaml(sub.profile.model_dump(mode="json")))]
    for stage in sub.stages:
        out.append("")
        out += stage_lines(stage, sub)
        if full:
            out += ["  resolved recipe:", _indent(_yaml(stage.resolved())),
                    "  deepspeed config:", _indent(deepspeed_text(stage, sub))]
        if memory:
            out += ["  " + line for line in memory_lines(stage, sub)]
    return "\n".join(out)
