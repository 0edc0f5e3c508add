"""The local supervisor runs its ranks (here stand-in processes) through the same attempt loop as the
Ray driver, with attempt_policy's decisions: restart after a crash, requeue outside the restart
budget, no restart after a user error, later stages only after a completed one."""
from __future__ import annotations

import json
import signal
import sys
import threading

from tests.services.procs import wait_until

from tests.unit.tracking.tracking_helpers import recipe_model
from unigen.orchestrator.config.profile import Profile
from unigen.orchestrator.launchers.local import LocalSupervisor
from unigen.orchestrator.runs import RunLedger

# A stand-in rank: exits with plan[attempt - 1][rank] from plan.json in its run folder, and records
# the rank contract it was started with; a null plan entry waits for SIGTERM, then "saves" and exits 75.
RANK = """
import json, os, signal, sys, time
from pathlib import Path
run = Path(sys.argv[1])
attempt, rank = int(os.environ["UNIGEN_ATTEMPT"]), int(os.environ["RANK"])
keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "UNIGEN_JOB_ID", "PYTHONUNBUFFERED")
(run / f"env-{attempt}-{rank}.json").write_text(json.dumps({k: os.environ.get(k) for k in keys}))
code = json.loads((run / "plan.json").read_text())[attempt - 1][rank]
if code is None:
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(75))
    (run / f"ready-{rank}").touch()
    time.sleep(30)
sys.exit(code)
"""


def make_run(root, name, plan, max_restarts=1):
    ledger = RunLedger.create(root, run_id=name, recipe=recipe_model("r", "pretrain", max_steps=4),
                              recipe_path="r.yaml", recipe_sha256="0",
                              profile=Profile.model_validate({
                                  "name": "p", "launcher": "local",
                                  "local": {"backend": "gloo", "cpu_ranks": 2, "max_restarts": max_restarts},
                                  "env": {"OMP_NUM_THREADS": "1"}}))
    ledger.paths.logs.mkdir(parents=True, exist_ok=True)
    (ledger.paths.root / "plan.json").write_text(json.dumps(plan))
    return ledger


def supervise(*ledgers, sup=None):
    sup = sup or LocalSupervisor([l.paths.root for l in ledgers], rank_command=[sys.executable, "-c", RANK])
    return sup.run()


def reasons(ledger):
    record = ledger.read()
    return record["status"], [(a["exit_reason"], a["exit_code"]) for a in record["attempts"]]


def test_a_crash_restarts_and_a_requeue_does_not_use_the_restart_budget(tmp_path):
    ledger = make_run(tmp_path, "r1", [[0, 75], [1, 0], [75, 75], [0, 0]], max_restarts=1)
    assert supervise(ledger) == 0
    assert reasons(ledger) == ("completed", [("requeue", 75), ("crashed", 1), ("requeue", 75), ("completed", 0)])
    env = json.loads((ledger.paths.root / "env-2-1.json").read_text())
    assert env["RANK"] == env["LOCAL_RANK"] == "1" and env["WORLD_SIZE"] == "2"
    assert env["MASTER_ADDR"] == "127.0.0.1" and env["MASTER_PORT"].isdigit()
    assert env["UNIGEN_JOB_ID"].startswith("local:") and env["PYTHONUNBUFFERED"] == "1"
    assert ledger.read()["attempts"][1]["exit_codes"] == [1, 0]


def test_crashes_past_max_restarts_fail_and_later_stages_do_not_start(tmp_path):
    first = make_run(tmp_path, "r1", [[0, 1], [137, 0]], max_restarts=1)
    second = make_run(tmp_path, "r2", [[0, 0]])
    assert supervise(first, second) == 1
    assert reasons(first) == ("failed", [("crashed", 1), ("crashed", 137)])
    assert "local.max_restarts=1" in first.read()["error"]
    assert second.read()["status"] == "cancelled" and not second.read()["attempts"]


def test_a_user_error_is_not_restarted(tmp_path):
    ledger = make_run(tmp_path, "r1", [[2, 1], [0, 0]], max_restarts=5)
    assert supervise(ledger) == 1
    assert reasons(ledger) == ("failed", [("crashed", 2)])


def test_a_signal_to_the_supervisor_makes_the_ranks_save_and_cancels_every_stage(tmp_path):
    first, second = make_run(tmp_path, "r1", [[None, None]]), make_run(tmp_path, "r2", [[0, 0]])
    sup = LocalSupervisor([first.paths.root, second.paths.root], rank_command=[sys.executable, "-c", RANK])

    def cancel_when_ready():
        wait_until(lambda: all((first.paths.root / f"ready-{r}").exists() for r in (0, 1)), timeout=30)
        sup._on_signal(signal.SIGTERM, None)

    threading.Thread(target=cancel_when_ready, daemon=True).start()
    assert supervise(sup=sup) == 1
    assert reasons(first) == ("cancelled", [("cancelled", 75)])
    assert second.read()["status"] == "cancelled" and not second.read()["attempts"]


def test_a_supervisor_failure_fails_its_run_names_the_supervisor_and_logs_the_attempts(tmp_path, monkeypatch):
    first, second = make_run(tmp_path, "r1", [[0, 0]]), make_run(tmp_path, "r2", [[0, 0]])

    def broken(self, ledger):
        raise OSError("no ranks today")

    monkeypatch.setattr(LocalSupervisor, "_attempts", broken)
    assert supervise(first, second) == 1
    assert first.read()["status"] == "failed"
    assert "the local supervisor failed: OSError: no ranks today" in first.read()["error"]
    assert second.read()["status"] == "cancelled" and not second.read()["attempts"]
    assert "r1: driver started" in (first.paths.logs / "launcher.log").read_text()


def test_the_supervisor_records_every_attempt_in_the_runs_launcher_log(tmp_path):
    ledger = make_run(tmp_path, "r1", [[0, 1], [0, 0]], max_restarts=1)
    assert supervise(ledger) == 0
    log = (ledger.paths.logs / "launcher.log").read_text()
    assert "attempt 1 on" in log and "attempt 2 on" in log and "restart 1 of 1" in log
