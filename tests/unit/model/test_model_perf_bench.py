"""bench/train_step.py stays alive: --small runs both rows (torch, DeepSpeed ZeRO-3) on the CPU, and the
side-by-side table computes the ratio against the baseline's output. Figures are never asserted."""
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))

import step_table  # noqa: E402


def test_small_run_prints_both_rows_and_the_flop_check(tmp_path):
    out = tmp_path / "result.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "bench/train_step.py"), "--small", "--batches", "2",
                           "--steps", "1", "--warmup", "1", "--json", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = {r["row"]: r for r in result["unigen"]}
    assert set(rows) == {"unigen torch", "unigen deepspeed zero3"}
    for row in rows.values():
        assert row["samples_per_s"] > 0 and math.isfinite(row["loss"]) and row["flops_per_step"] > 0
        assert row["ckpt"] == [] and row["mfu"] is None  # CPU: no matmul peak, no MFU
    assert rows["unigen torch"]["counted_over_formula"] == 1.0  # FlopCounterMode agrees with the formula
    assert 0 < result["header"]["params_trainable"] < result["header"]["params_total"]
    assert "| batch | baseline samples/s | unigen torch samples/s | ratio |" in proc.stdout


def test_the_table_puts_the_ratio_next_to_the_baseline():
    import step_setup

    config = step_setup.bench_config(True, autocast=False, frozen_dtype=None)
    header = {"device": "NVIDIA H200", "date": "2026-12-02", "torch": "2.11", "text_len": 96,
              "matmul_peak_tflops": None}  # no peak: the baseline's MFU column stays empty
    baseline = [{"row": "baseline", "batch": 32, "step_s": 1.6, "samples_per_s": 20.0, "peak_mem_gib": 70.1},
                {"row": "baseline", "batch": 8, "error": "OOM"}]
    ours = [{"row": "unigen torch", "batch": 32, "samples_per_s": 41.0, "peak_mem_gib": 90.0, "mfu": 0.4,
             "ckpt": ["backbone"]},
            {"row": "unigen deepspeed zero3", "batch": 32, "samples_per_s": 30.0, "peak_mem_gib": 95.0, "mfu": 0.3},
            {"row": "ablation: - frozen prefix (backward through the prompt)", "batch": 32, "samples_per_s": 35.0,
             "vs_all_on": 0.854, "ckpt": ["backbone"]}]
    table = step_table.render(header, baseline, ours, config)
    line = next(ln for ln in table.splitlines() if ln.startswith("| 32 |"))
    assert "| 20.0 | 41.0 | 2.05x | 30.0 | 1.50x |" in line and "70.1 / 90.0 / 95.0" in line
    assert "| - / 0.4 / 0.3 | backbone |" in line
    assert next(ln for ln in table.splitlines() if ln.startswith("| 8 |")).startswith("| 8 | OOM |")
    assert "| - frozen prefix (backward through the prompt) | 35.0 | 0.854 | backbone |" in table


def test_a_second_run_reuses_the_baseline_rows_only_from_a_comparable_run(tmp_path, capsys):
    """bench/gpu_run.sh's compile run takes the first run's baseline rows (--baseline-from) rather than
    measuring the baseline twice; rows of other shapes or a file without them are refused, naming why."""
    import train_step

    rows = [{"row": "baseline", "batch": 32, "step_s": 1.6, "samples_per_s": 20.0}]
    first = tmp_path / "train_step.json"
    first.write_text(json.dumps({"header": {"small": False, "text_len": 96}, "baseline": rows, "unigen": []}))
    args = train_step.parse_args(["--baseline-from", str(first), "--compile", "--rows", "torch"])
    assert args.baseline_rows == rows and args.compile

    empty = tmp_path / "no_baseline.json"
    empty.write_text(json.dumps({"header": {"small": False, "text_len": 96}, "baseline": [], "unigen": []}))
    refused = {
        "other sizes": ([str(first), "--small"], "small=False, text_len=96; this run has small=True"),
        "other prompt": ([str(first), "--text-len", "64"], "this run has small=False, text_len=64"),
        "no rows": ([str(empty)], "holds no baseline rows"),
        "no file": ([str(tmp_path / "missing.json")], "cannot read"),
        "both": ([str(first), "--baseline", "peer.py"], "give one"),
    }
    for name, (argv, message) in refused.items():
        with pytest.raises(SystemExit) as exit_:
            train_step.parse_args(["--baseline-from", *argv])
        assert exit_.value.code == 2, name
        assert message in capsys.readouterr().err, name


def test_the_table_says_when_the_blocks_were_compiled():
    import step_setup

    config = step_setup.bench_config(True, autocast=False, frozen_dtype=None)
    header = {"device": "NVIDIA H200", "date": "2026-12-02", "torch": "2.11", "text_len": 96, "matmul_peak_tflops": 790.0}
    ours = [{"row": "unigen torch", "batch": 32, "samples_per_s": 44.0, "ckpt": []}]
    assert "compile_blocks" not in step_table.render(header, [], ours, config).splitlines()[0]
    config.compile_blocks = True
    assert "model.compile_blocks on" in step_table.render(header, [], ours, config).splitlines()[0]
