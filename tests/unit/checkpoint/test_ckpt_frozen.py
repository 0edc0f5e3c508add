"""Checkpoints hold what trains: the runtime's save leaves every frozen parameter out (tiny model, real
DeepSpeed on one CPU rank, ZeRO 0 and 3, frozen and LoRA backbones), and a resume that rebuilds the frozen
parts from their source continues bit for bit; the export of such a checkpoint has the run's weights."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.unit.checkpoint.ckpt_helpers import free_port
from unigen.orchestrator.checkpoint import CheckpointError
from unigen.orchestrator.runtime.state import build_seed, load_module_without_frozen

ROOT = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("frozen_ckpt_worker.py")


def run_worker(stage: int, mode: str, out: Path) -> dict:
    done = subprocess.run([sys.executable, str(WORKER), str(stage), mode, str(out), str(free_port())], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-4000:]
    return json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("stage,mode", [(0, "frozen"), (3, "frozen"), (3, "lora")])
def test_a_checkpoint_holds_no_frozen_parameter_and_resumes_bit_exact(stage, mode, tmp_path):
    r = run_worker(stage, mode, tmp_path)
    frozen, trainable = set(r["frozen"]), set(r["trainable"])
    assert frozen and trainable
    if mode == "lora":  # the adapters train and are saved; the base weights they adapt are frozen
        assert any("lora_" in n for n in trainable) and not any("lora_" in n for n in frozen)
    saved = r["saved"]
    assert not frozen & set(saved["module"]), sorted(frozen & set(saved["module"]))[:5]
    assert not saved["frozen_in_file"]
    assert set(saved["param_shapes"]) <= trainable
    if stage == 0:  # the whole module state is in the file: every trained tensor
        assert trainable <= set(saved["module"])
    else:  # ZeRO-3: the trained tensors are the optimizer's partitions
        assert set(saved["param_shapes"]) == trainable
    b = r["bytes"]
    print(f"\ntiny preset, ZeRO {stage}, {mode} backbone: step folder {b['with_frozen']:,} B with frozen "
          f"parameters -> {b['without_frozen']:,} B without")
    assert b["without_frozen"] < 0.8 * b["with_frozen"]
    # `unigen validate`'s "checkpoint per step" is what these files hold (plus pickling and our small state).
    est = estimated(stage, mode)
    print(f"estimate: {est.total:,.0f} B written, {est.frozen_left_out:,.0f} B of frozen parameters left out")
    assert est.total <= b["without_frozen"] <= 1.25 * est.total
    assert 0.9 * est.frozen_left_out <= b["with_frozen"] - b["without_frozen"] <= 1.25 * est.frozen_left_out
    # Restored from the checkpoint plus the rebuilt frozen parts: the step-1 weights exactly, and the next
    # step equals the uninterrupted run's (loss and every weight, bit for bit).
    assert r["restored_unequal_at_step_1"] == []
    assert r["resumed_loss"] == r["losses"][1]
    assert r["resumed_unequal"] == []
    if stage == 0:
        assert r["export_unequal"] == []


def estimated(stage: int, mode: str):
    from unigen.model.config import UniGenConfig
    from unigen.model.presets import preset_fields
    from unigen.orchestrator.estimate import checkpoint_bytes, dims_from_config

    config = UniGenConfig.from_dict(preset_fields("tiny") | {"backbone_training": mode})
    dims = dims_from_config(config.to_dict(), config.parameter_counts())
    return checkpoint_bytes(dims, zero_stage=stage, data_parallel=1, precision="fp32")


def test_a_module_state_missing_a_trained_tensor_is_refused():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model[0].requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    load_module_without_frozen({k: v for k, v in state.items() if not k.startswith("0.")}, model)  # frozen: fine
    with pytest.raises(CheckpointError, match=r"1 trained tensors or buffers missing \(e.g. \['1.bias'\]\)"):
        load_module_without_frozen({k: v for k, v in state.items() if k != "1.bias"}, model)
    with pytest.raises(CheckpointError, match=r"1 unexpected \(e.g. \['extra'\]\)"):
        load_module_without_frozen(state | {"extra": torch.zeros(1)}, model)


def test_the_build_seed_is_the_recipes_train_seed():
    from unigen.orchestrator.config.recipe import TrainSection

    train = {"max_steps": 1, "global_batch_size": 1, "micro_batch_size": 1, "lr": 1e-4}
    assert build_seed(TrainSection(**train, seed=7)) == 7
    assert build_seed(TrainSection(**train)) == 0  # the field's default, as in every run.json
