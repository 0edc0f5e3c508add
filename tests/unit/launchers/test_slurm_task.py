"""The per-task wrapper that srun starts for each rank, with real processes (no SLURM needed): the
rank environment, a preemption signal that arrives before the runtime installed its handler, the
exit-code file the driver reads, and stopping a rank whose peer crashed."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.services.procs import wait_until
from unigen.orchestrator.launchers.slurm.task import handler_installed, rank_env

SLURM_ENV = {"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "77",
             "SLURM_CPUS_PER_TASK": "6", "SLURMD_NODENAME": "n2", "UNIGEN_ATTEMPT": "2"}


def test_rank_env_maps_slurm_to_the_runtime_contract():
    env = rank_env(dict(SLURM_ENV, MASTER_ADDR="10.0.0.1", MASTER_PORT="20154"))
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == ("3", "8", "1")
    assert (env["UNIGEN_JOB_ID"], env["OMP_NUM_THREADS"], env["MASTER_ADDR"]) == ("77", "6", "10.0.0.1")
    assert rank_env(dict(SLURM_ENV, OMP_NUM_THREADS="1"))["OMP_NUM_THREADS"] == "1"  # the profile's wins


def test_handler_installed_reads_the_signal_mask():
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import signal, sys, time
        time.sleep(0.5); signal.signal(signal.SIGUSR2, lambda *a: None); print("ready", flush=True); time.sleep(30)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert not handler_installed(child.pid, signal.SIGUSR2)
        assert child.stdout.readline().strip() == "ready"
        assert handler_installed(child.pid, signal.SIGUSR2)
        assert not handler_installed(child.pid, signal.SIGHUP)
    finally:
        child.kill()
        child.wait()


# A stand-in runtime: installs its USR2 handler only after INSTALL_AFTER seconds (like the real one,
# which imports torch first), records what it got, and exits 75 when signalled, else 0.
FAKE_RUNTIME = """
import signal, sys, time
got = []
time.sleep(float(sys.argv[2]))
signal.signal(signal.SIGUSR2, lambda s, f: got.append(s))
deadline = time.time() + float(sys.argv[3])
while time.time() < deadline and not got:
    time.sleep(0.05)
print("runtime got", got, flush=True)
open(sys.argv[1], "w").write(str(len(got)))
sys.exit(75 if got else 0)
"""

WRAPPER = """
import os, sys
from pathlib import Path
from unigen.orchestrator.launchers.slurm import task
task.PEER_GRACE_S = 0.5
run_dir, attempt_dir, command = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
attempt_dir.mkdir(parents=True, exist_ok=True)
sys.exit(task.Task(run_dir, attempt_dir, dict(os.environ), command=command).run())
"""


def start_task(tmp_path: Path, rank: int, runtime_args: list[str]) -> subprocess.Popen:
    fake = tmp_path / "fake_runtime.py"
    fake.write_text(FAKE_RUNTIME)
    env = dict(SLURM_ENV, SLURM_PROCID=str(rank), SLURM_NTASKS="2", PATH="/usr/bin:/bin")
    return subprocess.Popen([sys.executable, "-c", WRAPPER, str(tmp_path / "run"), str(tmp_path / "attempt"),
                             sys.executable, str(fake), *runtime_args], env=env, cwd=Path(__file__).parents[3])


def test_an_early_signal_is_held_until_the_runtime_can_take_it(tmp_path):
    got = tmp_path / "got.txt"
    task = start_task(tmp_path, 0, [str(got), "2.0", "20"])
    # The wrapper is up once its rank log has the header; the runtime is still "importing torch".
    assert wait_until(lambda: (tmp_path / "run" / "logs" / "rank-0.log").exists(), 30)
    time.sleep(0.3)
    task.send_signal(signal.SIGUSR2)
    assert task.wait(timeout=60) == 75  # without the hand-over the runtime ignores it and exits 0
    assert got.read_text() == "1"
    exit_file = json.loads((tmp_path / "attempt" / "rank-0.exit").read_text())
    assert exit_file == {"rank": 0, "code": 75, "node": "n2", "step_id": None, "stopped_after_peer": None}
    log = (tmp_path / "run" / "logs" / "rank-0.log").read_text()
    assert "===== attempt 2 rank 0 (SLURM job 77, node n2) =====" in log and "runtime got [12]" in log


def test_a_rank_whose_peer_crashed_is_stopped(tmp_path):
    (tmp_path / "attempt").mkdir()
    (tmp_path / "attempt" / "rank-1.exit").write_text(json.dumps({"rank": 1, "code": 1}))
    task = start_task(tmp_path, 0, [str(tmp_path / "got.txt"), "0", "120"])  # would wait 2 minutes
    assert task.wait(timeout=60) == 137
    exit_file = json.loads((tmp_path / "attempt" / "rank-0.exit").read_text())
    assert (exit_file["code"], exit_file["stopped_after_peer"]) == (137, 1)


def test_peers_that_saved_do_not_stop_a_rank(tmp_path):
    (tmp_path / "attempt").mkdir()
    (tmp_path / "attempt" / "rank-1.exit").write_text(json.dumps({"rank": 1, "code": 75}))
    task = start_task(tmp_path, 0, [str(tmp_path / "got.txt"), "0", "2"])
    assert task.wait(timeout=60) == 0
    assert json.loads((tmp_path / "attempt" / "rank-0.exit").read_text())["stopped_after_peer"] is None


def test_a_cancel_in_run_json_reaches_a_runtime_no_signal_reached(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(json.dumps({"cancel_requested": "2026-01-01T00:00:00+00:00"}))
    got = tmp_path / "got.txt"
    task = start_task(tmp_path, 0, [str(got), "0.5", "30"])  # would run 30 s without the cancel
    assert task.wait(timeout=60) == 75
    assert got.read_text() == "1"
