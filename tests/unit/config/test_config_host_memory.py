"""Host memory per node in the estimate `unigen validate` prints (orchestrator/estimate.py host_memory)."""
from __future__ import annotations

import pytest

from unigen.model.config import get_preset
from unigen.orchestrator import cli
from unigen.orchestrator.estimate import GIB, RUNTIME_HOST_BYTES, dims_from_config, estimate, host_memory, render


def dims(preset="unigen-3b", **overrides):
    config = get_preset(preset, **overrides)
    return dims_from_config(config.to_dict(), config.parameter_counts(), max_length=1024)


def test_zero3_gpu_ranks_hold_the_frozen_parts_whole_and_no_trainable_copy():
    d = dims()
    frozen = d.total - d.trainable
    zero3 = host_memory(d, zero_stage=3, data_parallel=32, micro_batch=16, precision="bf16", checkpointing=True,
                        gpus=True, ranks_per_node=8)
    # bf16 run: DeepSpeed runs the frozen parts in bf16, so they are loaded in it (2 B), once per rank.
    assert zero3.frozen == frozen * 2 and zero3.trainable_build == 0 and zero3.states == 0
    assert zero3.per_rank == frozen * 2 + RUNTIME_HOST_BYTES["gpu"]
    assert zero3.per_node == 8 * zero3.per_rank
    # ZeRO 0-2 build every trainable parameter whole on each rank, in the model's dtype (float32 here).
    zero2 = host_memory(d, zero_stage=2, data_parallel=32, micro_batch=16, precision="bf16", checkpointing=True,
                        gpus=True, ranks_per_node=8)
    assert zero2.trainable_build == d.trainable * 4
    assert zero2.per_rank - zero3.per_rank == d.trainable * 4


def test_offloaded_states_are_host_memory_per_shard():
    d = dims()
    base = host_memory(d, zero_stage=3, data_parallel=32, micro_batch=1, precision="bf16", checkpointing=True,
                       gpus=True, ranks_per_node=8)
    both = host_memory(d, zero_stage=3, data_parallel=32, micro_batch=1, precision="bf16", checkpointing=True,
                       gpus=True, ranks_per_node=8, offload_optimizer=True, offload_param=True)
    # fp32 master + Adam m, v (12 B) + fp32 gradients (4 B) of the rank's shard; its shard of the bf16 weights
    assert both.states == pytest.approx(d.trainable * 16 / 32 + d.total * 2 / 32)
    assert both.per_rank - base.per_rank == pytest.approx(both.states)


def test_cpu_ranks_keep_everything_in_host_memory():
    d = dims("tiny")
    host = host_memory(d, zero_stage=3, data_parallel=2, micro_batch=2, precision="fp32", checkpointing=False,
                       gpus=False, ranks_per_node=2)
    on_rank = estimate(d, zero_stage=3, data_parallel=2, micro_batch=2, precision="fp32", checkpointing=False)
    assert host.states == on_rank.total and host.trainable_build == 0
    assert host.frozen == (d.total - d.trainable) * 4


def test_render_warns_when_the_node_is_too_small():
    d = dims()
    kwargs = dict(zero_stage=3, data_parallel=32, micro_batch=16, precision="bf16", checkpointing=True, gpus=True,
                  ranks_per_node=8)
    host = host_memory(d, **kwargs)
    fits = render(d, **kwargs, node_memory_gb=960)
    assert fits[-2].startswith(f"  host memory per node (estimate): 8 ranks x {host.per_rank / GIB:.2f} GiB")
    assert fits[-1] == f"  host: {host.per_node / GIB:.2f} GiB fits resources.mem_gb=960 GB per node"
    small = render(d, **kwargs, node_memory_gb=64)
    assert small[-1].startswith("  warning: host:") and "does NOT fit resources.mem_gb=64 GB per node" in small[-1]
    assert "deepspeed.zero_stage=3" not in small[-1]  # already partitioned: fewer ranks or more memory
    plain = render(d, **{**kwargs, "zero_stage": 2}, node_memory_gb=64)
    assert "deepspeed.zero_stage=3 (builds the trainable parts partitioned)" in plain[-1]
    assert not any("host" in line for line in render(d, **{**kwargs, "ranks_per_node": None}))


def test_validate_prints_the_host_memory_of_the_profile(capsys):
    assert cli.main(["validate", "recipes/pretrain.yaml", "--profile", "slurm-a100",
                     "profile.resources.mem_gb=64"]) == 0
    out = capsys.readouterr().out
    assert "host memory per node (estimate): 8 ranks x" in out
    assert "warning: host:" in out and "does NOT fit resources.mem_gb=64 GB per node" in out
