"""Memory per GPU (or per CPU rank) of a training stage, from the configs alone (no torch).

The model states follow the ZeRO paper's accounting (Rajbhandari et al. 2020, mixed-precision Adam):
- weights:    2 B/param under bf16 (4 B under fp32), for EVERY parameter (frozen ones too);
- gradients:  2 B (4 B) per TRAINABLE parameter;
- optimizer:  fp32 master copy + Adam m + v = 12 B per trainable parameter under bf16 (fp32: m + v = 8 B,
              the weights are the master copy).
ZeRO stage 1 shards the optimizer states over the data-parallel ranks, stage 2 the gradients too,
stage 3 the weights too. Stage 3 also gathers whole modules while it runs them: we count the largest
module twice (the one computing + the one prefetched).

Activations (stored for backward, per rank) use the per-layer transformer estimate of Korthikanti et al.
2022, 34 bytes per token per hidden unit in 16-bit WITHOUT the attention-score term (sdpa / flash
attention never store the score matrix): 17 values x hidden x tokens x layers x micro batch. With
gradient checkpointing a layer keeps only its input (1 value) and one layer at a time is recomputed
(+17). Checkpointing is per stack (model.gradient_checkpointing_parts). The frozen backbone counts in
full depth: the learnable queries sit at its INPUT, so gradients flow through all of it. The sequence
is taken at its maximum (data.max_length, else the model's max_length), one image_gen slot per sample.
With model.frozen_prefix_cache (a frozen backbone under sdpa or eager attention, the default) the
prompt before the slot runs without autograd: the backbone stores activations for the slot's tokens
only and holds the prompt's keys and values instead (2 x layers x kv width per prompt token, which the
slot attends to in backward). Frozen weights take model.frozen_dtype's size when it is bfloat16 under
train.precision fp32 (under bf16 every weight is bf16 already). Not counted: the frozen vision tower
and VAE encoder (no gradient passes through them; their working memory is transient), CUDA context,
allocator fragmentation and communication buffers: keep 10-20% of the GPU free.

Checkpoint bytes per step (``checkpoint_bytes``) count what the files of one save hold. Frozen parameters
are in no checkpoint (unigen.orchestrator.runtime.state), so only trainable ones count: the fp32 master
weights with Adam's m and v (12 B per trainable parameter, partitioned over the ranks under ZeRO 1-3),
plus, under ZeRO 0-2, the module's copy of the trainable weights in the training dtype, which rank 0
writes whole (ZeRO-3's module file holds placeholders only). Without ZeRO rank 0 writes everything, and
in fp32 the module copy IS the master (4 + 8 B).
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

WEIGHT_BYTES = {"bf16": 2, "fp32": 4}
OPTIMIZER_BYTES = {"bf16": 12, "fp32": 8}
VALUES_PER_TOKEN_LAYER = 17  # Korthikanti et al.: 34 bytes in 16-bit, without the s^2 attention term
GIB = 1024 ** 3
PREFIX_CACHE_ATTENTION = ("sdpa", "eager")  # model/frozen_prefix.py's SUPPORTED_ATTENTION
SLOT_MARKERS = 2  # <|image_gen_start|> and <|image_gen_end|> around the queries


@dataclass(frozen=True)
class Stack:
    """One transformer stack that stores activations: tokens per sample, width, depth.

    ``part`` is its gradient_checkpointing_parts name; ``held_values`` are values per sample it keeps for
    backward besides its layers' activations (the frozen prefix's keys and values)."""

    name: str
    tokens: int
    width: int
    layers: int
    part: str = ""
    held_values: int = 0


@dataclass(frozen=True)
class ModelDims:
    """What the estimate needs from a model: parameter counts, the largest module, the stacks."""

    total: int
    trainable: int
    largest_module: int
    largest_module_name: str
    stacks: tuple[Stack, ...]
    frozen_dtype: str | None = None
    dtype: str = "float32"
    """The model's parameter dtype (UniGenConfig.dtype): what a whole build makes the trainable parts in."""
    averaged: bool = False
    """The run keeps an fp32 average of the trained weights (train.ema_decay): 4 B more per trainable
    parameter, in the optimizer column and in checkpoints, partitioned under ZeRO-3 only."""


@dataclass(frozen=True)
class Estimate:
    """Bytes per rank, by kind, for one ZeRO stage."""

    zero_stage: int
    weights: float
    gradients: float
    optimizer: float
    gather: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.gather + self.activations


ADAM_MOMENTS_BYTES = 8  # Adam m and v in fp32
FP32_BYTES = 4


@dataclass(frozen=True)
class CheckpointBytes:
    """What one checkpoint save writes (see the module docstring): in total and by the rank that writes most
    (rank 0), and what leaving the frozen parameters out saves."""

    total: float
    per_rank: float
    frozen_left_out: float


def checkpoint_bytes(dims: ModelDims, *, zero_stage: int, data_parallel: int, precision: str) -> CheckpointBytes:
    """Bytes of one checkpoint of the model's trainable state under ZeRO ``zero_stage`` over ``data_parallel`` ranks."""
    trainable, frozen = dims.trainable, dims.total - dims.trainable
    left_out = float(frozen * frozen_weight_bytes(precision, dims.frozen_dtype))
    module = trainable * WEIGHT_BYTES[precision] if zero_stage < 3 else 0
    master = 0 if zero_stage == 0 and precision == "fp32" else trainable * FP32_BYTES
    optimizer = master + trainable * ADAM_MOMENTS_BYTES
    per_rank = module + (optimizer if zero_stage == 0 else optimizer / data_parallel)
    average = trainable * FP32_BYTES if dims.averaged else 0  # rank 0 writes it whole unless ZeRO-3 partitions it
    per_rank += average / data_parallel if zero_stage == 3 else average
    return CheckpointBytes(float(module + optimizer + average), float(per_rank), left_out)


def frozen_weight_bytes(precision: str, frozen_dtype: str | None) -> int:
    """Bytes per frozen parameter: bf16 under bf16 precision whatever frozen_dtype says (DeepSpeed casts
    every weight), else frozen_dtype's size."""
    return WEIGHT_BYTES["bf16"] if precision == "bf16" or frozen_dtype == "bfloat16" else WEIGHT_BYTES[precision]


def model_state_bytes(total: int, trainable: int, *, zero_stage: int, data_parallel: int,
                      precision: str, frozen_dtype: str | None = None,
                      averaged: bool = False) -> tuple[float, float, float]:
    """(weights, gradients, optimizer) bytes per rank under ZeRO ``zero_stage`` over ``data_parallel`` ranks;
    ``averaged``: the optimizer column also holds the weight average (ModelDims.averaged)."""
    if zero_stage not in (0, 1, 2, 3) or data_parallel < 1:
        raise ValueError(f"zero_stage {zero_stage} / data_parallel {data_parallel} out of range")
    weights = trainable * WEIGHT_BYTES[precision] + (total - trainable) * frozen_weight_bytes(precision, frozen_dtype)
    gradients = trainable * WEIGHT_BYTES[precision]
    optimizer = trainable * OPTIMIZER_BYTES[precision]
    if zero_stage >= 1:
        optimizer /= data_parallel
    if zero_stage >= 2:
        gradients /= data_parallel
    if zero_stage >= 3:
        weights /= data_parallel
    if averaged:
        optimizer += trainable * FP32_BYTES / (data_parallel if zero_stage == 3 else 1)
    return float(weights), float(gradients), float(optimizer)


Checkpointing = bool | Collection[str]
"""True / False for every stack, or the part names that recompute (model.gradient_checkpointing_parts)."""


def recomputes(stack: Stack, checkpointing: Checkpointing) -> bool:
    return checkpointing if isinstance(checkpointing, bool) else stack.part in checkpointing


def checkpointing_of(model_config: dict[str, Any]) -> Checkpointing:
    """What a UniGenConfig dict (``to_dict()``) recomputes: False, or its gradient_checkpointing_parts."""
    if not model_config.get("gradient_checkpointing"):
        return False
    parts = model_config.get("gradient_checkpointing_parts")
    return True if parts is None else frozenset(parts)


def activation_bytes(stacks: tuple[Stack, ...] | list[Stack], *, micro_batch: int, precision: str,
                     checkpointing: Checkpointing) -> float:
    """Activations stored for backward per rank (see the module docstring)."""
    total = 0.0
    for s in stacks:
        ckpt = recomputes(s, checkpointing)
        per_layer_values = 1 if ckpt else VALUES_PER_TOKEN_LAYER
        values = s.tokens * s.width * (per_layer_values * s.layers + (VALUES_PER_TOKEN_LAYER if ckpt else 0))
        total += micro_batch * (values + s.held_values) * WEIGHT_BYTES[precision]
    return total


def estimate(dims: ModelDims, *, zero_stage: int, data_parallel: int, micro_batch: int, precision: str,
             checkpointing: Checkpointing) -> Estimate:
    """Bytes per rank for one ZeRO stage."""
    weights, gradients, optimizer = model_state_bytes(dims.total, dims.trainable, zero_stage=zero_stage,
                                                      data_parallel=data_parallel, precision=precision,
                                                      frozen_dtype=dims.frozen_dtype, averaged=dims.averaged)
    gather = 2.0 * dims.largest_module * WEIGHT_BYTES[precision] if zero_stage == 3 and data_parallel > 1 else 0.0
    acts = activation_bytes(dims.stacks, micro_batch=micro_batch, precision=precision, checkpointing=checkpointing)
    return Estimate(zero_stage, weights, gradients, optimizer, gather, acts)


def dims_from_config(config: dict[str, Any], counts: dict[str, int], *, max_length: int | None = None) -> ModelDims:
    """ModelDims of a UniGenConfig (as ``to_dict()``) and its ``parameter_counts()``."""
    text = config["backbone_config"]["text_config"]
    width, layers, vocab = int(text["hidden_size"]), int(text["num_hidden_layers"]), int(text["vocab_size"])
    tied = bool(config["backbone_config"].get("tie_word_embeddings", text.get("tie_word_embeddings", True)))
    dit = config["dit_config"]
    dit_width = int(dit["num_attention_heads"]) * int(dit["attention_head_dim"])
    dit_layers = int(dit["num_layers"])
    compression = 2 ** (len(config["vae_config"]["encoder_block_out_channels"]) - 1)
    latent_side = int(config["image_size"]) // compression // int(dit.get("patch_size") or 1)
    connector_layers = max(1, int(config["connector_layers"]))
    embedding = vocab * width
    modules = {
        "token embedding": embedding,
        "backbone layer": max(0, counts["backbone_text"] - embedding * (1 if tied else 2)) // max(1, layers),
        "connector layer": counts["connector"] // connector_layers,
        "DiT layer": counts["dit"] // max(1, dit_layers),
    }
    largest_name = max(modules, key=modules.get)
    stacks = (
        _backbone_stack(config, text, int(max_length or config["max_length"])),
        Stack("connector", int(config["num_queries"]), width, connector_layers, part="connector"),
        Stack("DiT", latent_side * latent_side, dit_width, dit_layers, part="dit"),
    )
    frozen_dtype = config.get("frozen_dtype") if config.get("backbone_training", "frozen") == "frozen" else None
    return ModelDims(int(counts["total"]), int(counts["trainable"]), modules[largest_name], largest_name, stacks,
                     frozen_dtype=frozen_dtype, dtype=str(config.get("dtype") or "float32"))


def _backbone_stack(config: dict[str, Any], text: dict[str, Any], sequence: int) -> Stack:
    """The backbone's stack: the whole sequence, or (frozen prefix cache) the slot plus the prompt's keys/values."""
    width, layers = int(text["hidden_size"]), int(text["num_hidden_layers"])
    cached = (config.get("backbone_training", "frozen") == "frozen" and config.get("frozen_prefix_cache", True)
              and config.get("attn_implementation", "sdpa") in PREFIX_CACHE_ATTENTION)
    slot = int(config["num_queries"]) + SLOT_MARKERS
    if not cached or sequence <= slot:
        return Stack("backbone", sequence, width, layers, part="backbone")
    heads = int(text["num_attention_heads"])
    kv_width = int(text.get("num_key_value_heads") or heads) * int(text.get("head_dim") or width // heads)
    prefix = sequence - slot
    return Stack("backbone", slot, width, layers, part="backbone", held_values=prefix * layers * 2 * kv_width)


# ---- host memory per node -------------------------------------------------------------------------------
DTYPE_BYTES = {"float32": 4, "bfloat16": 2}
# What a rank holds besides the model: Python, torch, DeepSpeed, transformers, diffusers. Measured on CPU
# ranks (bench/host_memory.py, RSS before building: 0.5 GiB); a GPU rank adds the CUDA and NCCL libraries
# and their host-side buffers, taken as 3 GiB (an assumption, not measured here).
RUNTIME_HOST_BYTES = {"gpu": 3 * GIB, "cpu": GIB // 2}


@dataclass(frozen=True)
class HostMemory:
    """Peak host memory of one rank while it starts (see ``host_memory``), by kind, in bytes."""

    frozen: float
    """The frozen parts, whole on every rank (loaded once per rank, before DeepSpeed partitions them)."""
    trainable_build: float
    """The trainable parts as built: whole in the model's dtype, or nothing extra under ZeRO-3's partitioned
    construction (unigen.model.zero_init)."""
    states: float
    """Model states kept in host memory: all of them on CPU ranks, the offloaded ones on GPU ranks."""
    runtime: float
    ranks_per_node: int

    @property
    def per_rank(self) -> float:
        return self.frozen + self.trainable_build + self.states + self.runtime

    @property
    def per_node(self) -> float:
        return self.per_rank * self.ranks_per_node


def host_memory(dims: ModelDims, *, zero_stage: int, data_parallel: int, micro_batch: int, precision: str,
                checkpointing: Checkpointing, gpus: bool, ranks_per_node: int, offload_optimizer: bool = False,
                offload_param: bool = False) -> HostMemory:
    """Host memory per rank at its peak (building the model and the engine), and per node.

    Every rank loads the frozen parts whole, in the dtype it runs them in. Under ZeRO 0-2 it also builds every
    trainable parameter whole in the model's dtype; under ZeRO-3 the trainable parts are created partitioned
    (on the GPU for GPU ranks), so they add nothing beyond the rank's shard. A CPU rank keeps all its model
    states and activations in host memory (the per-rank estimate); a GPU rank only what DeepSpeed offloads:
    ``offload_optimizer`` (fp32 master + Adam + fp32 gradients of the rank's shard) and ``offload_param``
    (its shard of the weights)."""
    frozen = float((dims.total - dims.trainable) * frozen_weight_bytes(precision, dims.frozen_dtype))
    if not gpus:  # the trainable weights are among the rank's model states already
        states = estimate(dims, zero_stage=zero_stage, data_parallel=data_parallel, micro_batch=micro_batch,
                          precision=precision, checkpointing=checkpointing).total
        return HostMemory(frozen, 0.0, states, float(RUNTIME_HOST_BYTES["cpu"]), ranks_per_node)
    trainable_build = 0.0 if zero_stage == 3 else float(dims.trainable * DTYPE_BYTES.get(dims.dtype, FP32_BYTES))
    shards = data_parallel if zero_stage >= 1 else 1
    states = 0.0
    if offload_optimizer:
        states += dims.trainable * (OPTIMIZER_BYTES[precision] + FP32_BYTES) / shards
    if offload_param and zero_stage == 3:
        states += dims.total * WEIGHT_BYTES[precision] / data_parallel
    return HostMemory(frozen, trainable_build, float(states), float(RUNTIME_HOST_BYTES["gpu"]), ranks_per_node)


def host_lines(host: HostMemory, *, zero_stage: int, gpus: bool, node_memory_gb: float | None) -> list[str]:
    """What `unigen validate` prints about host memory, with the warning when a node's memory is too small."""
    if not gpus:
        build = "trainable parts partitioned" if zero_stage == 3 else "trainable parts whole"
        build += f" + model states and activations (the estimate above) {_size(host.states)}"
    else:
        build = ("trainable parts built partitioned (ZeRO-3)" if zero_stage == 3 else
                 f"trainable parts built whole {_size(host.trainable_build)}")
        build += f" + offloaded model states {_size(host.states)}"
    lines = [f"  host memory per node (estimate): {host.ranks_per_node} ranks x {_size(host.per_rank)} = "
             f"{_size(host.per_node)}; per rank: frozen parts whole {_size(host.frozen)} + {build} + runtime "
             f"{_size(host.runtime)}. Not counted: data loader workers, page cache."]
    if node_memory_gb:
        verdict = _verdict(host.per_node, node_memory_gb)
        warn = "" if verdict == "fits" else "warning: "
        line = f"  {warn}host: {_size(host.per_node)} {verdict} resources.mem_gb={node_memory_gb:g} GB per node"
        if verdict != "fits":
            fixes = ["fewer ranks per node", "more memory (resources.mem_gb)"]
            if zero_stage != 3:
                fixes.insert(0, "deepspeed.zero_stage=3 (builds the trainable parts partitioned)")
            line += ": " + ", ".join(fixes)
        lines.append(line)
    return lines


def _verdict(need: float, budget_gb: float) -> str:
    """How ``need`` bytes compare with ``budget_gb`` GB: "fits" up to 85% of it, then tight, then too big."""
    budget = budget_gb * 1e9
    return "fits" if need <= 0.85 * budget else "does NOT fit" if need > budget else "is tight (over 85%) in"


def _size(n: float) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def _checkpointing_text(stacks: tuple[Stack, ...], checkpointing: Checkpointing) -> str:
    names = [s.name for s in stacks if recomputes(s, checkpointing)]
    if not names:
        return "off"
    return "on" if len(names) == len(stacks) else f"on ({', '.join(names)})"


def _stack_text(stacks: tuple[Stack, ...], checkpointing: Checkpointing) -> str:
    """Per stack: tokens x width x (17 per layer, or 1 per layer + 17 recomputed) [+ held prefix keys/values]."""
    out = []
    for s in stacks:
        values = "(1 per layer + 17 recomputed)" if recomputes(s, checkpointing) else "17 per layer"
        held = f" + {s.held_values:,} prefix keys/values (frozen_prefix_cache)" if s.held_values else ""
        out.append(f"{s.name} {s.tokens} tok x {s.width} x {s.layers} layers x {values}{held}")
    return "; ".join(out)


def _checkpoint_line(dims: ModelDims, *, zero_stage: int, data_parallel: int, precision: str) -> str:
    """What one save of the recipe's ZeRO stage writes, and what is in it."""
    ckpt = checkpoint_bytes(dims, zero_stage=zero_stage, data_parallel=data_parallel, precision=precision)
    w = WEIGHT_BYTES[precision]
    if zero_stage == 0 and precision == "fp32":
        held = "the fp32 weights + Adam m, v: 12 B, all from rank 0"
    elif zero_stage == 0:
        held = f"fp32 master + Adam m, v: 12 B + the module's {w} B copy, all from rank 0"
    else:
        held = "fp32 master + Adam m, v: 12 B, partitioned" + (f", + the module's {w} B copy from rank 0"
                                                                if zero_stage < 3 else "")
    if dims.averaged:
        held += " + their fp32 average (train.ema_decay): 4 B"
    return (f"  checkpoint per step (ZeRO {zero_stage}): {_size(ckpt.total)} in total, {_size(ckpt.per_rank)} from "
            f"the rank writing most = {dims.trainable:,} trainable params x ({held}); frozen parameters are not "
            f"saved ({_size(ckpt.frozen_left_out)} left out of each save).")


def render(dims: ModelDims, *, zero_stage: int, data_parallel: int, micro_batch: int, precision: str,
           checkpointing: Checkpointing, gpus: bool, gpu_memory_gb: float | None = None,
           ranks_per_node: int | None = None, node_memory_gb: float | None = None,
           offload_optimizer: bool = False, offload_param: bool = False) -> list[str]:
    """The lines `unigen validate` prints: a table over ZeRO stages 0-3 (the recipe's marked *) and why, then
    host memory per node when ``ranks_per_node`` is known (compared with ``node_memory_gb`` when given)."""
    unit = "GPU" if gpus else "CPU rank"
    lines = [f"memory per {unit} (estimate; {data_parallel} data-parallel ranks, {precision}, micro batch "
             f"{micro_batch}, gradient checkpointing {_checkpointing_text(dims.stacks, checkpointing)}):",
             f"  parameters: {dims.total:,} total, {dims.trainable:,} trainable",
             f"  {'ZeRO':>6}  {'weights':>11}  {'gradients':>11}  {'optimizer':>11}  {'zero3 gather':>12}  "
             f"{'activations':>11}  {'total':>11}"]
    by_stage = [estimate(dims, zero_stage=stage, data_parallel=data_parallel, micro_batch=micro_batch,
                         precision=precision, checkpointing=checkpointing) for stage in range(4)]
    for stage, e in enumerate(by_stage):
        mark = "*" if stage == zero_stage else " "
        lines.append(f"  {mark}{stage:>5}  {_size(e.weights):>11}  {_size(e.gradients):>11}  {_size(e.optimizer):>11}  "
                     f"{_size(e.gather):>12}  {_size(e.activations):>11}  {_size(e.total):>11}")
    w, o = WEIGHT_BYTES[precision], OPTIMIZER_BYTES[precision]
    frozen_b = frozen_weight_bytes(precision, dims.frozen_dtype)
    weights = f"{w} B/param (all)" if frozen_b == w else f"{w} B/trainable + {frozen_b} B/frozen param (frozen_dtype)"
    states = "fp32 master + Adam m, v" if precision == "bf16" else "Adam m, v; the weights are the master copy"
    if dims.averaged:
        states += "; + 4 B for the weight average of train.ema_decay, partitioned by ZeRO-3 only"
    lines += [
        f"  * = deepspeed.zero_stage. weights {weights}, gradients {w} B and optimizer {o} B per trainable "
        f"param ({states}); ZeRO 1 shards the optimizer, 2 + gradients, 3 + weights.",
        f"  zero3 gather: 2 x the largest module ({dims.largest_module_name}, {dims.largest_module:,} params) gathered "
        "while it runs.",
        _checkpoint_line(dims, zero_stage=zero_stage, data_parallel=data_parallel, precision=precision),
        f"  activations (x {w} B, per sample x micro batch): {_stack_text(dims.stacks, checkpointing)}. Not counted: "
        "frozen vision tower / VAE, CUDA context, fragmentation.",
    ]
    if gpu_memory_gb:
        chosen = by_stage[zero_stage]
        verdict = _verdict(chosen.total, gpu_memory_gb)
        fix = "" if verdict == "fits" else (": raise deepspeed.zero_stage, set model.gradient_checkpointing=true, "
                                            "lower train.micro_batch_size or data.max_length, or add GPUs")
        lines.append(f"  ZeRO {zero_stage}: {_size(chosen.total)} {verdict} {gpu_memory_gb:g} GB per GPU{fix}")
    if ranks_per_node:
        host = host_memory(dims, zero_stage=zero_stage, data_parallel=data_parallel, micro_batch=micro_batch,
                           precision=precision, checkpointing=checkpointing, gpus=gpus, ranks_per_node=ranks_per_node,
                           offload_optimizer=offload_optimizer, offload_param=offload_param)
        lines += host_lines(host, zero_stage=zero_stage, gpus=gpus, node_memory_gb=node_memory_gb)
    return lines
