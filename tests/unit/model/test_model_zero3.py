"""The model under DeepSpeed ZeRO-3 on two CPU ranks whose batches differ (the runtime's setting)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from tests.services.ports import free_port
from tests.unit.model.model_helpers import seed_example, tiny_pipeline

ROOT = pathlib.Path(__file__).resolve().parents[3]


def run_two_ranks(mode, tmp_path):
    port = str(free_port())
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs, reports = [], []
    for rank in (0, 1):
        report = tmp_path / f"rank{rank}.json"
        reports.append(report)
        procs.append(subprocess.Popen(
            [sys.executable, str(ROOT / "tests/unit/model/zero3_worker.py"), str(rank), port, mode, str(report)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("ZeRO-3 ranks hung (a module ran on one rank only?)")
    for proc, text in zip(procs, outputs):
        assert proc.returncode == 0, text[-4000:]
    for text in outputs:
        assert "unknown inputs or outputs type" not in text  # ZeRO-3 would miss the output's tensors
    return [json.loads(r.read_text())["losses"] for r in reports]


@pytest.mark.parametrize("mode", ["frozen", "lora"])
def test_zero3_steps_with_different_batches_per_rank(mode, tmp_path):
    rank0, rank1 = run_two_ranks(mode, tmp_path)
    assert [n for _, n in rank0] == [2, 1, 1] and [n for _, n in rank1] == [1, 0, 1]
    assert rank1[1][0] == 0.0
    assert all(torch.isfinite(torch.tensor(loss)) and loss > 0 for loss, n in rank0 + rank1 if n)
    if mode == "frozen":
        # ZeRO-3 partitioning does not change the math: rank 0's first loss equals a plain local step.
        pipe = tiny_pipeline(seed=0)
        batch = pipe.processor([seed_example()])
        torch.manual_seed(100)
        local = pipe.model.train()(**batch).loss.item()
        assert rank0[0][0] == pytest.approx(local, rel=1e-5)
