"""The DeepSpeed config on GPUs (communication overlapped with backward, NCCL-sized buckets) and on CPU ranks
(unchanged: collectives in program order, where resume is measured bit for bit); the checkpoint bytes of
`unigen validate`'s memory estimate."""
from __future__ import annotations

import pytest

from tests.unit.config.test_config_cli import smoke_workdir  # noqa: F401  (the fixture)
from unigen.orchestrator import cli
from unigen.orchestrator.config.recipe import DeepSpeedSection, TrainSection
from unigen.orchestrator.deepspeed_config import build_deepspeed_config, gpu_zero_settings
from unigen.orchestrator.estimate import ModelDims, checkpoint_bytes

TRAIN = TrainSection(max_steps=10, global_batch_size=8, micro_batch_size=2, lr=1e-4, precision="bf16")

# What CPU runs have used all along (the bit-exact resume tests run these): nothing may change here.
CPU_ZERO = {
    0: {"stage": 0},
    1: {"stage": 1},
    2: {"stage": 2},
    3: {"stage": 3, "contiguous_gradients": True, "overlap_comm": False,
        "stage3_gather_16bit_weights_on_model_save": False},
}


def config(stage: int, *, gpus: bool, extra: dict | None = None) -> dict:
    return build_deepspeed_config(TRAIN, DeepSpeedSection(zero_stage=stage, config=extra or {}), 2, gpus=gpus)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_cpu_ranks_keep_program_order(stage):
    assert config(stage, gpus=False)["zero_optimization"] == CPU_ZERO[stage]
    assert build_deepspeed_config(TRAIN, DeepSpeedSection(zero_stage=stage), 2) == config(stage, gpus=False)


@pytest.mark.parametrize("stage,expected", [
    (0, {}),
    (1, {"overlap_comm": True, "contiguous_gradients": True, "reduce_scatter": True,
         "reduce_bucket_size": 200_000_000, "allgather_bucket_size": 200_000_000}),
    (2, {"overlap_comm": True, "contiguous_gradients": True, "reduce_scatter": True,
         "reduce_bucket_size": 200_000_000, "allgather_bucket_size": 200_000_000}),
    (3, {"overlap_comm": True, "contiguous_gradients": True, "reduce_bucket_size": 200_000_000,
         "stage3_prefetch_bucket_size": 50_000_000, "stage3_param_persistence_threshold": 100_000,
         "stage3_gather_16bit_weights_on_model_save": False}),
])
def test_gpu_ranks_overlap_communication(stage, expected):
    zero = config(stage, gpus=True)["zero_optimization"]
    assert zero == {"stage": stage} | expected
    # The rest of the config is the CPU one.
    assert {k: v for k, v in config(stage, gpus=True).items() if k != "zero_optimization"} == \
        {k: v for k, v in config(stage, gpus=False).items() if k != "zero_optimization"}


def test_a_recipe_override_wins_over_the_gpu_default():
    zero = config(3, gpus=True, extra={"zero_optimization": {"overlap_comm": False, "reduce_bucket_size": 5e7}})
    assert zero["zero_optimization"]["overlap_comm"] is False and zero["zero_optimization"]["reduce_bucket_size"] == 5e7


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_deepspeed_accepts_the_gpu_keys(stage):
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    parsed = DeepSpeedZeroConfig(**config(stage, gpus=True)["zero_optimization"])
    assert parsed.overlap_comm is True and parsed.reduce_bucket_size == 200_000_000
    assert all(key in DeepSpeedZeroConfig.model_fields or any(
        f.alias == key for f in DeepSpeedZeroConfig.model_fields.values()) for key in gpu_zero_settings(stage))


def test_validate_prints_the_gpu_settings_for_a_gpu_profile(smoke_workdir, capsys):
    assert cli.main(["validate", "recipes/pretrain.yaml", "--profile", "slurm-a100"]) == 0
    out = capsys.readouterr().out
    assert '"overlap_comm": true' in out and '"stage3_prefetch_bucket_size": 50000000' in out
    assert cli.main(["validate", "recipes/smoke-pretrain.yaml", "--profile", "local", "deepspeed.zero_stage=3"]) == 0
    out = capsys.readouterr().out
    assert '"overlap_comm": false' in out and "stage3_prefetch_bucket_size" not in out


def dims(total: int, trainable: int) -> ModelDims:
    return ModelDims(total, trainable, 0, "x", ())


@pytest.mark.parametrize("stage,precision,total,per_rank", [
    (0, "fp32", 12 * 100, 12 * 100),  # the fp32 module is the master: + m, v; all from rank 0
    (0, "bf16", 14 * 100, 14 * 100),  # bf16 module + fp32 master + m, v; all from rank 0
    (1, "bf16", 14 * 100, 2 * 100 + 12 * 100 / 4),  # the module whole from rank 0, the optimizer partitioned
    (2, "fp32", 16 * 100, 4 * 100 + 12 * 100 / 4),
    (3, "bf16", 12 * 100, 12 * 100 / 4),  # ZeRO-3's module file holds placeholders
])
def test_checkpoint_bytes_count_the_trainable_state_only(stage, precision, total, per_rank):
    got = checkpoint_bytes(dims(1000, 100), zero_stage=stage, data_parallel=4, precision=precision)
    assert got.total == total and got.per_rank == per_rank
    assert got.frozen_left_out == 900 * (2 if precision == "bf16" else 4)


def test_validate_shows_the_checkpoint_bytes_of_unigen_3b(smoke_workdir, capsys):
    assert cli.main(["validate", "recipes/pretrain.yaml", "--profile", "slurm-a100"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "checkpoint per step" in x)
    # 3,225,888,672 trainable parameters x 12 B over 32 GPUs; the ~4.07B frozen ones (bf16) are not written.
    assert "checkpoint per step (ZeRO 3): 36.05 GiB in total, 1.13 GiB from the rank writing most" in line
    assert "frozen parameters are not saved (7.58 GiB left out of each save)" in line
