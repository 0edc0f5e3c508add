"""bench/host_memory.py stays alive: at tiny size on two CPU ranks it prints both builds' rows, and the two
builds train the same first step (the partitioned construction changes where parameters live, not them)."""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]


def test_host_memory_bench_tiny_two_ranks(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench/host_memory.py"), "--preset", "tiny", "--ranks", "2",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[1].split() == ["build", "ranks", "after", "build", "after", "init", "after", "step"]
    report = json.loads(out.read_text())
    rows = {row["build"]: row for row in report["rows"]}
    assert set(rows) == {"plain", "partitioned"} and all(row["ranks"] == 2 for row in rows.values())
    for row in rows.values():  # peaks only grow, phase after phase
        assert 0.1 < row["after_build_gib"] <= row["after_initialize_gib"] <= row["after_step_gib"] < 8
    assert rows["plain"]["losses"] == rows["partitioned"]["losses"]
