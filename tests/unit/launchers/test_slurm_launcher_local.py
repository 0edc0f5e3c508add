"""The SLURM launcher's parts that need no cluster: scontrol parsing, the state line of `unigen
status`, what happens without SLURM tools on PATH, and cancelling a run that has no job yet."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from unigen.orchestrator.config import resolve_submission
from unigen.orchestrator.errors import UserError
from unigen.orchestrator.launchers import get_launcher
from unigen.orchestrator.launchers.slurm.tools import (SlurmError, describe_state, parse_record, parse_time,
                                                       present, requeue, run_tool)
from unigen.orchestrator.runs import RunLedger, new_run_id

REPO = Path(__file__).resolve().parents[3]
SCONTROL = ("JobId=12 JobName=smoke run UserId=root(0) JobState=PENDING Reason=Dependency "
            "Dependency=afterok:11(unfulfilled) Restarts=0 PreemptTime=None EndTime=Unknown "
            "WorkDir=/tmp/a b/logs Comment=x = y NodeList=(null)")


def test_parse_scontrol_record_keeps_values_with_blanks():
    info = parse_record(SCONTROL)
    assert info["JobName"] == "smoke run" and info["WorkDir"] == "/tmp/a b/logs"
    assert info["Dependency"] == "afterok:11(unfulfilled)" and info["Comment"] == "x = y"
    assert not present(info["PreemptTime"]) and parse_time(info["EndTime"]) is None
    assert parse_time("2026-01-02T03:04:05").isoformat().startswith("2026-01-02T03:04:05")


@pytest.mark.parametrize("info, line", [
    ({"JobState": "PENDING", "Reason": "Dependency"}, "PENDING (Dependency)"),
    ({"JobState": "PENDING", "Reason": "None"}, "PENDING"),
    ({"JobState": "RUNNING", "NodeList": "n[1-2]"}, "RUNNING on n[1-2]"),
    ({"JobState": "COMPLETED", "NodeList": "n1"}, "COMPLETED"),
    (None, "ENDED (no longer known to slurmctld)")])
def test_describe_state(info, line):
    assert describe_state(info) == line


def fake_scontrol(tmp_path: Path, monkeypatch, script: str) -> None:
    """An `scontrol` first on PATH that runs the given sh script body."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\n" + script)
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_requeue_from_inside_the_job_outlives_the_sigterm_that_ends_it(tmp_path, monkeypatch):
    # `scontrol requeue` of our own job makes slurmstepd SIGTERM every process of the step, scontrol
    # included, and under load that kill can overtake slurmctld's reply (CI saw the requeue done and
    # the run marked failed). This scontrol gets the TERM after it "requeued", as that one did.
    calls = tmp_path / "calls"
    fake_scontrol(tmp_path, monkeypatch, f'echo "$*" >> "{calls}"\nkill -TERM $$\nsleep 0.2\nexit 0\n')
    requeue("42")
    assert calls.read_text() == "requeue 42\n"
    with pytest.raises(SlurmError, match="scontrol exited -15"):  # what the unshielded call did
        run_tool(["scontrol", "requeue", "42"])


@pytest.mark.parametrize("restarts, status, rc", [("1", "requeued", 0), ("0", "failed", 1)])
def test_driver_trusts_the_scheduler_when_the_requeue_answer_is_lost(slurm_runs, tmp_path, monkeypatch,
                                                                     restarts, status, rc):
    # scontrol fails, but slurmctld already counts the restart: the run is requeued, not failed.
    from unigen.orchestrator.launchers.slurm.job import Driver

    fake_scontrol(tmp_path, monkeypatch, 'case "$1" in\n'
                  f'  show) echo "JobId=42 JobState=COMPLETING Restarts={restarts} EndTime=Unknown";;\n'
                  '  requeue) echo "Socket timed out on send/recv operation" >&2; exit 1;;\nesac\n')
    _, (ledger, _) = slurm_runs
    ledger.start_attempt(job_id="42")
    driver = Driver(ledger.paths.root, {"SLURM_JOB_ID": "42", "SLURM_RESTART_COUNT": "0"})
    assert driver._conclude([75, 75], []) == rc
    record = ledger.read()
    assert record["status"] == status
    assert record["attempts"][0]["exit_reason"] == "requeue"
    if status == "failed":
        assert "could not requeue job 42" in record["error"]


@pytest.fixture
def slurm_runs(tmp_path, monkeypatch):
    """Two stages for slurm-a100 with their run folders (as create_runs makes them, minus the MLflow
    parent run, which costs seconds and plays no part here)."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("UNIGEN_RUN_ROOT", str(tmp_path / "runs"))
    sub = resolve_submission(["recipes/pretrain.yaml", "recipes/instruct.yaml"], "slurm-a100")
    ledgers = [RunLedger.create(sub.run_root, run_id=new_run_id(st.recipe.name), recipe=st.recipe,
                                recipe_path=str(st.path), recipe_sha256=st.recipe_sha256, profile=sub.profile)
               for st in sub.stages]
    return sub, ledgers


def test_launch_without_sbatch_is_one_clear_error_and_marks_the_runs(slurm_runs, monkeypatch, tmp_path):
    sub, ledgers = slurm_runs
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(UserError, match=r"sbatch refused stage 1 .*sbatch not found on PATH: run unigen on a "
                                        r"SLURM login node"):
        get_launcher("slurm").launch(ledgers, sub, wait=False)
    assert [lg.read()["status"] for lg in ledgers] == ["failed", "failed"]


def test_sbatch_refusal_names_the_script_submitit_wrote(slurm_runs, monkeypatch, tmp_path):
    sub, ledgers = slurm_runs
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: Invalid partition name specified' >&2\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(UserError, match=r"sbatch refused stage 1 .*Invalid partition name specified; the script is "):
        get_launcher("slurm").launch(ledgers, sub, wait=False)
    assert [lg.read()["status"] for lg in ledgers] == ["failed", "failed"]
    (script,) = (ledgers[0].paths.root / "slurm").glob(".submission_file_*.sh")
    text = script.read_text()
    assert "#SBATCH --nodes=4" in text and "submitit.core._submit" in text  # kept for a look


def test_cancel_and_state_of_a_run_without_a_job(slurm_runs):
    _, ledgers = slurm_runs
    launcher = get_launcher("slurm")
    assert launcher.scheduler_state(ledgers[0].read()) is None
    assert "marked cancelled" in launcher.cancel(ledgers[0])
    assert ledgers[0].read()["status"] == "cancelled"
    assert "is cancelled: nothing to cancel" in launcher.cancel(RunLedger(ledgers[0].paths.root))


def test_holds_without_a_job_or_without_slurm(slurm_runs, monkeypatch, tmp_path):
    _, ledgers = slurm_runs
    launcher = get_launcher("slurm")
    record = ledgers[0].read()
    assert launcher.holds(record) is False  # never submitted
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    record["slurm"] = {"job_id": "12"}
    assert launcher.holds(record) is True  # cannot ask slurmctld: an active run is assumed held
    record["status"] = "failed"
    assert launcher.holds(record) is False


def test_budgets_count_only_the_attempts_since_the_last_submission():
    from unigen.orchestrator.config.profile import SlurmSection
    from unigen.orchestrator.launchers.slurm.job import _counted
    from unigen.orchestrator.launchers.slurm.policy import budget_exhausted

    attempts = [{"exit_reason": "crashed"}] * 3 + [{"exit_reason": "preempted"}]
    slurm = SlurmSection(max_failures=2, max_requeues=5)
    assert "slurm.max_failures=2" in budget_exhausted(_counted({"attempts": attempts}), slurm)
    resumed = {"attempts": attempts, "slurm": {"budget_from": 3}}  # `unigen resume` after the 3 crashes
    assert _counted(resumed) == [{"exit_reason": "preempted"}]
    assert budget_exhausted(_counted(resumed), slurm) is None
