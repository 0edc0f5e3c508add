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
(+17). The frozen backbone counts in full: the learnable queries sit at its INPUT, so gradients flow
through all of it. The sequence is taken at its maximum (data.max_length, else the model's
max_length), one image_gen slot per sample. Not counted: the frozen vision tower and VAE encoder (no
gradient passes through them; their working memory is transient), CUDA context, allocator
fragmentation and communication buffers: keep 10-20% of the GPU free.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WEIGHT_BYTES = {"bf16": 2, "fp32": 4}
OPTIMIZER_BYTES = {"bf16": 12, "fp32": 8}
VALUES_PER_TOKEN_LAYER = 17  # Korthikanti et al.: 34 bytes in 16-bit, without the s^2 attention term
GIB = 1024 ** 3


@dataclass(frozen=True)
class Stack:
    """One transformer stack that stores activations: tokens per sample, width, depth."""

    name: str
    tokens: int
    width: int
    layers: int


@dataclass(frozen=True)
class ModelDims:
    """What the estimate needs from a model: parameter counts, the largest module, the stacks."""

    total: int
    trainable: int
    largest_module: int
    largest_module_name: str
    stacks: tuple[Stack, ...]


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


def model_state_bytes(total: int, trainable: int, *, zero_stage: int, data_parallel: int,
                      precision: str) -> tuple[float, float, float]:
    """(weights, gradients, optimizer) bytes per rank under ZeRO ``zero_stage`` over ``data_parallel`` ranks."""
    if zero_stage not in (0, 1, 2, 3) or data_parallel < 1:
        raise ValueError(f"zero_stage {zero_stage} / data_parallel {data_parallel} out of range")
    weights = total * WEIGHT_BYTES[precision]
    gradients = trainable * WEIGHT_BYTES[precision]
    optimizer = trainable * OPTIMIZER_BYTES[precision]
    if zero_stage >= 1:
        optimizer /= data_parallel
    if zero_stage >= 2:
        gradients /= data_parallel
    if zero_stage >= 3:
        weights /= data_parallel
    return float(weights), float(gradients), float(optimizer)


def activation_bytes(stacks: tuple[Stack, ...] | list[Stack], *, micro_batch: int, precision: str,
                     checkpointing: bool) -> float:
    """Activations stored for backward per rank (see the module docstring)."""
    total = 0.0
    for s in stacks:
        per_layer_values = 1 if checkpointing else VALUES_PER_TOKEN_LAYER
        values = s.tokens * s.width * (per_layer_values * s.layers + (VALUES_PER_TOKEN_LAYER if checkpointing else 0))
        total += micro_batch * values * WEIGHT_BYTES[precision]
    return total


def estimate(dims: ModelDims, *, zero_stage: int, data_parallel: int, micro_batch: int, precision: str,
             checkpointing: bool) -> Estimate:
    """Bytes per rank for one ZeRO stage."""
    weights, gradients, optimizer = model_state_bytes(dims.total, dims.trainable, zero_stage=zero_stage,
                                                      data_parallel=data_parallel, precision=precision)
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
        Stack("backbone", int(max_length or config["max_length"]), width, layers),
        Stack("connector", int(config["num_queries"]), width, connector_layers),
        Stack("DiT", latent_side * latent_side, dit_width, dit_layers),
    )
    return ModelDims(int(counts["total"]), int(counts["trainable"]), modules[largest_name], largest_name, stacks)


def _size(n: float) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def render(dims: ModelDims, *, zero_stage: int, data_parallel: int, micro_batch: int, precision: str,
           checkpointing: bool, gpus: bool, gpu_memory_gb: float | None = None) -> list[str]:
    """The lines `unigen validate` prints: a table over ZeRO stages 0-3 (the recipe's marked *) and why."""
    unit = "GPU" if gpus else "CPU rank"
    lines = [f"memory per {unit} (estimate; {data_parallel} data-parallel ranks, {precision}, micro batch "
             f"{micro_batch}, gradient checkpointing {'on' if checkpointing else 'off'}):",
             f"  parameters: {dims.total:,} total, {dims.trainable:,} trainable",
             f"  {'ZeRO':>6}  {'weights':>11}  {'gradients':>11}  {'optimizer':>11}  {'zero3 gather':>12}  "
             f"{'activations':>11}  {'total':>11}"]
    chosen = None
    for stage in range(4):
        e = estimate(dims, zero_stage=stage, data_parallel=data_parallel, micro_batch=micro_batch,
                     precision=precision, checkpointing=checkpointing)
        mark = "*" if stage == zero_stage else " "
        chosen = e if stage == zero_stage else chosen
        lines.append(f"  {mark}{stage:>5}  {_size(e.weights):>11}  {_size(e.gradients):>11}  {_size(e.optimizer):>11}  "
                     f"{_size(e.gather):>12}  {_size(e.activations):>11}  {_size(e.total):>11}")
    w, o = WEIGHT_BYTES[precision], OPTIMIZER_BYTES[precision]
    acts = ", ".join(f"{s.name} {s.tokens} tok x {s.width} x {s.layers} layers" for s in dims.stacks)
    states = "fp32 master + Adam m, v" if precision == "bf16" else "Adam m, v; the weights are the master copy"
    lines += [
        f"  * = deepspeed.zero_stage. weights {w} B/param (all), gradients {w} B and optimizer {o} B per trainable "
        f"param ({states}); ZeRO 1 shards the optimizer, 2 + gradients, 3 + weights.",
        f"  zero3 gather: 2 x the largest module ({dims.largest_module_name}, {dims.largest_module:,} params) gathered "
        "while it runs.",
        f"  activations: micro batch x tokens x width x ({'1 per layer + 17 for the layer being recomputed' if checkpointing else '17 values per layer'})"
        f" x {w} B, for: {acts}. Not counted: frozen vision tower / VAE, CUDA context, fragmentation.",
    ]
    if gpu_memory_gb and chosen is not None:
        budget = gpu_memory_gb * 1e9
        verdict = "fits" if chosen.total <= 0.85 * budget else "does NOT fit" if chosen.total > budget else \
            "is tight (over 85%) in"
        fix = "" if verdict == "fits" else (": raise deepspeed.zero_stage, set model.gradient_checkpointing=true, "
                                            "lower train.micro_batch_size or data.max_length, or add GPUs")
        lines.append(f"  ZeRO {zero_stage}: {_size(chosen.total)} {verdict} {gpu_memory_gb:g} GB per GPU{fix}")
    return lines
