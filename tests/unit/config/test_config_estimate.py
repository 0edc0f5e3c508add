"""The memory estimate against hand-computed numbers (see orchestrator/estimate.py for the model)."""
from __future__ import annotations

import pytest

from unigen.model.config import get_preset
from unigen.orchestrator.estimate import (GIB, ModelDims, Stack, activation_bytes, checkpointing_of,
                                          dims_from_config, estimate, model_state_bytes, render)


@pytest.mark.parametrize("stage,expected", [
    (0, (2000, 800, 4800)),   # 2 B x 1000 weights, 2 B x 400 grads, 12 B x 400 optimizer
    (1, (2000, 800, 1200)),   # optimizer / 4
    (2, (2000, 200, 1200)),   # + gradients / 4
    (3, (500, 200, 1200)),    # + weights / 4
])
def test_model_states_bf16_by_zero_stage(stage, expected):
    assert model_state_bytes(1000, 400, zero_stage=stage, data_parallel=4, precision="bf16") == expected


def test_model_states_fp32_and_one_rank():
    # fp32: 4 B weights and grads, 8 B Adam m + v (the weights are the master copy)
    assert model_state_bytes(1000, 400, zero_stage=0, data_parallel=4, precision="fp32") == (4000, 1600, 3200)
    assert model_state_bytes(1000, 400, zero_stage=3, data_parallel=4, precision="fp32") == (1000, 400, 800)
    # one rank: sharding changes nothing
    assert model_state_bytes(1000, 400, zero_stage=3, data_parallel=1, precision="bf16") == (2000, 800, 4800)
    with pytest.raises(ValueError):
        model_state_bytes(1, 1, zero_stage=4, data_parallel=1, precision="bf16")


@pytest.mark.parametrize("stage,optimizer", [(0, 4800 + 1600), (2, 1200 + 1600), (3, 1200 + 400)])
def test_the_weight_average_adds_4_bytes_per_trainable_param_partitioned_by_zero3_only(stage, optimizer):
    assert model_state_bytes(1000, 400, zero_stage=stage, data_parallel=4, precision="bf16",
                             averaged=True)[2] == optimizer


def test_the_weight_average_is_in_the_checkpoint_bytes():
    from dataclasses import replace

    from unigen.orchestrator.estimate import checkpoint_bytes

    dims = ModelDims(total=1000, trainable=400, largest_module=10, largest_module_name="x", stacks=())
    plain = checkpoint_bytes(dims, zero_stage=3, data_parallel=4, precision="bf16")
    averaged = checkpoint_bytes(replace(dims, averaged=True), zero_stage=3, data_parallel=4, precision="bf16")
    assert (averaged.total - plain.total, averaged.per_rank - plain.per_rank) == (1600, 400)
    plain0 = checkpoint_bytes(dims, zero_stage=0, data_parallel=4, precision="bf16")
    averaged0 = checkpoint_bytes(replace(dims, averaged=True), zero_stage=0, data_parallel=4, precision="bf16")
    assert averaged0.per_rank - plain0.per_rank == 1600  # rank 0 writes the whole average


def test_activations_with_and_without_checkpointing():
    stacks = [Stack("a", tokens=10, width=4, layers=3), Stack("b", tokens=5, width=2, layers=1)]
    # micro 2 x tokens x width x 17 per layer x layers x 2 B: 2*10*4*51*2 + 2*5*2*17*2
    assert activation_bytes(stacks, micro_batch=2, precision="bf16", checkpointing=False) == 8160 + 680
    # checkpointing: 1 per layer + 17 for the layer recomputed: 2*10*4*(3+17)*2 + 2*5*2*(1+17)*2
    assert activation_bytes(stacks, micro_batch=2, precision="bf16", checkpointing=True) == 3200 + 720
    assert activation_bytes(stacks, micro_batch=1, precision="fp32", checkpointing=False) == (8160 + 680)


def test_gather_buffer_only_under_zero3_with_several_ranks():
    dims = ModelDims(total=1000, trainable=400, largest_module=100, largest_module_name="x", stacks=())
    assert estimate(dims, zero_stage=3, data_parallel=4, micro_batch=1, precision="bf16", checkpointing=False).gather == 400
    assert estimate(dims, zero_stage=2, data_parallel=4, micro_batch=1, precision="bf16", checkpointing=False).gather == 0
    assert estimate(dims, zero_stage=3, data_parallel=1, micro_batch=1, precision="bf16", checkpointing=False).gather == 0
    e = estimate(dims, zero_stage=3, data_parallel=4, micro_batch=1, precision="bf16", checkpointing=False)
    assert e.total == 500 + 200 + 1200 + 400 + 0


def test_dims_of_the_tiny_preset():
    config = get_preset("tiny", frozen_prefix_cache=False)
    counts = config.parameter_counts()
    dims = dims_from_config(config.to_dict(), counts, max_length=256)
    assert (dims.total, dims.trainable) == (counts["total"], counts["trainable"])
    backbone, connector, dit = dims.stacks
    text, dit_cfg = config.backbone_config["text_config"], config.dit_config
    assert (backbone.tokens, backbone.width, backbone.layers) == (256, text["hidden_size"], text["num_hidden_layers"])
    assert backbone.held_values == 0
    assert (connector.tokens, connector.width, connector.layers) == (config.num_queries, text["hidden_size"],
                                                                     config.connector_layers)
    side = config.image_size // config.vae_compression // dit_cfg["patch_size"]  # latent pixels a side
    assert (dit.tokens, dit.width, dit.layers) == (side * side, dit_cfg["num_attention_heads"] *
                                                   dit_cfg["attention_head_dim"], dit_cfg["num_layers"])
    assert [s.part for s in dims.stacks] == ["backbone", "connector", "dit"]  # gradient_checkpointing_parts names
    assert dims_from_config(config.to_dict(), counts).stacks[0].tokens == config.max_length
    assert dims.largest_module > 0 and dims.largest_module_name in ("token embedding", "backbone layer",
                                                                    "connector layer", "DiT layer")


def test_frozen_prefix_cache_stores_the_slot_and_the_prompts_keys_values():
    """The default (frozen backbone, sdpa): activations at the 256 + 2 slot tokens, plus 2 x layers x kv width
    per prompt token (unigen-3b: 36 layers, 2 kv heads x 128)."""
    config = get_preset("unigen-3b", backbone_source=None, decoder_source=None)
    dims = dims_from_config(config.to_dict(), config.parameter_counts(), max_length=1024)
    backbone = dims.stacks[0]
    assert (backbone.tokens, backbone.held_values) == (258, (1024 - 258) * 36 * 2 * 2 * 128)
    full = dims_from_config(get_preset("unigen-3b", backbone_source=None, decoder_source=None,
                                       frozen_prefix_cache=False).to_dict(), config.parameter_counts(), max_length=1024)
    assert (full.stacks[0].tokens, full.stacks[0].held_values) == (1024, 0)
    saved = (activation_bytes(full.stacks[:1], micro_batch=1, precision="bf16", checkpointing=False)
             - activation_bytes(dims.stacks[:1], micro_batch=1, precision="bf16", checkpointing=False))
    assert saved == 2 * ((1024 - 258) * 2048 * 17 * 36 - (1024 - 258) * 36 * 2 * 256)
    # The cache does not apply (plain forward, full sequence) to a trained backbone or flash attention.
    for change in ({"backbone_training": "lora"}, {"attn_implementation": "flash_attention_2"}):
        other = dims_from_config({**config.to_dict(), **change}, config.parameter_counts(), max_length=1024)
        assert (other.stacks[0].tokens, other.stacks[0].held_values) == (1024, 0), change
    # A sequence no longer than the slot has no prompt to cache.
    short = dims_from_config(config.to_dict(), config.parameter_counts(), max_length=200)
    assert (short.stacks[0].tokens, short.stacks[0].held_values) == (200, 0)


def test_checkpointing_per_part():
    stacks = [Stack("a", tokens=10, width=4, layers=3, part="backbone"),
              Stack("b", tokens=5, width=2, layers=1, part="dit", held_values=7)]
    # a recomputes (10*4*(3+17)*2 = 1600), b stores 17 per layer + its held values: (5*2*17 + 7)*2 = 354
    assert activation_bytes(stacks, micro_batch=1, precision="bf16", checkpointing=frozenset({"backbone"})) == 1600 + 354
    assert activation_bytes(stacks, micro_batch=1, precision="bf16", checkpointing=frozenset()) == \
        activation_bytes(stacks, micro_batch=1, precision="bf16", checkpointing=False)
    assert checkpointing_of({"gradient_checkpointing": False, "gradient_checkpointing_parts": ["dit"]}) is False
    assert checkpointing_of({"gradient_checkpointing": True, "gradient_checkpointing_parts": ["dit"]}) == {"dit"}
    assert checkpointing_of({"gradient_checkpointing": True}) is True
    dims = ModelDims(total=1, trainable=1, largest_module=1, largest_module_name="x", stacks=tuple(stacks))
    lines = render(dims, zero_stage=0, data_parallel=1, micro_batch=1, precision="bf16",
                   checkpointing=frozenset({"dit"}), gpus=True)
    assert lines[0].endswith("gradient checkpointing on (b)):")
    assert "a 10 tok x 4 x 3 layers x 17 per layer; b 5 tok x 2 x 1 layers x (1 per layer + 17 recomputed) + 7 " \
           "prefix keys/values" in lines[-1]


def test_frozen_dtype_halves_frozen_weights_under_fp32_only():
    assert model_state_bytes(1000, 400, zero_stage=0, data_parallel=1, precision="fp32",
                             frozen_dtype="bfloat16") == (400 * 4 + 600 * 2, 1600, 3200)
    assert model_state_bytes(1000, 400, zero_stage=0, data_parallel=1, precision="bf16",
                             frozen_dtype="float32") == (2000, 800, 4800)  # DeepSpeed bf16 casts every weight
    config = get_preset("tiny", frozen_dtype="bfloat16")
    assert dims_from_config(config.to_dict(), config.parameter_counts()).frozen_dtype == "bfloat16"
    lora = get_preset("tiny", frozen_dtype="bfloat16", backbone_training="lora", lora_rank=2)
    assert dims_from_config(lora.to_dict(), lora.parameter_counts()).frozen_dtype is None  # nothing frozen to shrink
    dims = dims_from_config(config.to_dict(), config.parameter_counts())
    text = render(dims, zero_stage=0, data_parallel=1, micro_batch=1, precision="fp32", checkpointing=False,
                  gpus=False)
    assert "weights 4 B/trainable + 2 B/frozen param (frozen_dtype)" in " ".join(text)


def test_unigen_7b_on_8_a100_80gb():
    config = get_preset("unigen-7b", gradient_checkpointing=True)
    dims = dims_from_config(config.to_dict(), config.parameter_counts(), max_length=1024)
    zero0 = estimate(dims, zero_stage=0, data_parallel=8, micro_batch=4, precision="bf16", checkpointing=True)
    zero3 = estimate(dims, zero_stage=3, data_parallel=8, micro_batch=4, precision="bf16", checkpointing=True)
    # 6.55B trainable x 16 B of states alone is ~98 GiB: plain data parallelism cannot fit an 80 GB GPU
    assert zero0.total > 80e9 and zero3.total < 0.85 * 80e9
    assert zero3.optimizer == pytest.approx(dims.trainable * 12 / 8)
    lines = render(dims, zero_stage=0, data_parallel=8, micro_batch=4, precision="bf16", checkpointing=True,
                   gpus=True, gpu_memory_gb=80)
    assert lines[0].startswith("memory per GPU (estimate; 8 data-parallel ranks, bf16, micro batch 4")
    assert any(line.lstrip().startswith("*    0") for line in lines)  # the recipe's stage is marked
    assert "does NOT fit 80 GB per GPU: raise deepspeed.zero_stage" in lines[-1]
    ok = render(dims, zero_stage=3, data_parallel=8, micro_batch=4, precision="bf16", checkpointing=True, gpus=True,
                gpu_memory_gb=80)
    assert ok[-1] == f"  ZeRO 3: {zero3.total / GIB:.2f} GiB fits 80 GB per GPU"
