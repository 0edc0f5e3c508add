"""The SLURM launcher end to end on real loopback clusters (slurmctld + slurmd + munge): `unigen submit
--profile tests/profiles/slurm-test.yaml` with 2 CPU ranks, run through sbatch, srun and the job-side
driver, in a workspace whose path holds a space, a quote, `;` and `$()` (every path reaches sbatch
and bash).

- the two smoke stages complete, stage 2 PENDING on `afterok` while stage 1 runs: the reference run,
  shared by the module (uninterrupted, world size 2);
- a `high` job preempts stage 1: the ranks save together, the driver requeues, the run resumes and
  both stages end with weights bit-identical to the reference;
- a time-limit signal (the job's limit cut to 1-2 min while it trains, USR2 115 s before the end)
  requeues and resumes;
- two nodes, one rank per node, reproduce the reference's loss history and weights;
- #SBATCH values with blanks, quotes, `#`, `;`, `$()` reach slurmctld unchanged; `unigen status` and
  `unigen cancel` of a pending job; `unigen cancel` of a running one saves and stops, no requeue,
  and `unigen resume` finishes it as a new job;
- a user error (exit 2) fails the run without a requeue and cancels the later stage; --wait exits 1.

Timings on 2 cores are in runbooks/running-on-slurm.md.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services.procs import wait_until
from tests.services.slurm import SlurmCluster
from tests.smoke_shape import SHAPE

pytestmark = [pytest.mark.services, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "tests" / "profiles" / "slurm-test.yaml"
COMMON = [*SHAPE, "train.warmup_steps=2", "checkpoint.every=4", "train.log_every=1"]
PRETRAIN = ["train.max_steps=12", *COMMON]  # stage 1 alone (preemption, two nodes)
PIPELINE = ["pretrain:train.max_steps=12", "instruct:train.max_steps=4", *COMMON]
RUN_TIMEOUT = 600


# -- helpers ----------------------------------------------------------------------------------------
def unigen(ws: Path, cluster: SlurmCluster, run_root: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unigen.orchestrator.cli", *args], cwd=ws,
                          env=_env(cluster, run_root), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def start_submit(ws: Path, cluster: SlurmCluster, run_root: Path, recipes: list[str], overrides: list[str]) -> subprocess.Popen:
    """`unigen submit ... --wait` in the background; its output goes to run_root/../submit-<name>.log."""
    log = open(run_root.parent / f"submit-{run_root.name}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "unigen.orchestrator.cli", "submit", *recipes, "--profile",
                             str(PROFILE), "--wait", *overrides], cwd=ws, env=_env(cluster, run_root),
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _env(cluster: SlurmCluster, run_root: Path) -> dict[str, str]:
    env = cluster.environ(UNIGEN_RUN_ROOT=str(run_root), PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def finish(proc: subprocess.Popen, run_root: Path, cluster: SlurmCluster) -> None:
    try:
        rc = proc.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = None
    if rc != 0:
        raise AssertionError(f"unigen submit --wait exited {rc}\n{submit_log(run_root)}\n{run_logs(run_root)}\n"
                             + cluster.logs(20))


def submit_log(run_root: Path) -> str:
    path = run_root.parent / f"submit-{run_root.name}.log"
    return path.read_text()[-4000:] if path.exists() else ""


def run_logs(run_root: Path) -> str:
    out = []
    for d in run_dirs(run_root):
        for log in sorted((d / "logs").glob("*")):
            out.append(f"--- {log}\n{log.read_text(errors='replace')[-3000:]}")
    return "\n".join(out)


def run_dirs(run_root: Path) -> list[Path]:
    """Run folders, stage order (created_at has milliseconds)."""
    dirs = [p.parent for p in run_root.glob("*/run.json")]
    return sorted(dirs, key=lambda d: read(d)["created_at"])


def read(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def loss_history(run_dir: Path) -> dict[int, float]:
    """step -> loss, the last row of each step (a step redone after a resume replaces the earlier one)."""
    return {row["step"]: row["loss"] for row in metrics(run_dir)}


def tensors(run_dir: Path) -> dict:
    from unigen.model.export_layout import export_tensors

    return export_tensors(run_dir / "export")


def assert_same_weights(run_dir: Path, ref_dir: Path) -> None:
    import torch

    got, want = tensors(run_dir), tensors(ref_dir)
    assert got.keys() == want.keys()
    different = [k for k in want if not torch.equal(got[k], want[k])]
    assert not different, f"{len(different)} tensors differ from the reference, e.g. {different[:3]}"


def wait_for(check, timeout: float, what: str, run_root: Path):
    if not wait_until(check, timeout, interval=0.5):
        raise AssertionError(f"timed out waiting for {what}\n{submit_log(run_root)}\n{run_logs(run_root)}")


# -- fixtures -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    # GraceTime 60 s (the fixture's default is 10): on a loaded 2-core machine a save may take longer
    # than 10 s, and then SLURM kills and requeues the job itself, which is not the path under test.
    with SlurmCluster(nodes=1, grace_time_s=60) as c:
        yield c


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("slurm") / "work space 'q'; $(echo x)"
    ws.mkdir()
    shutil.copytree(REPO / "recipes", ws / "recipes")
    out = subprocess.run([sys.executable, "-m", "unigen.orchestrator.cli", "data", "synth", "--out",
                          "unigen-data/shapes"], cwd=ws, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return ws


@pytest.fixture(scope="module")
def reference(cluster, workspace) -> list[Path]:
    """Both smoke stages, uninterrupted, 2 ranks on one node; checks on the way that stage 2 waits on
    stage 1 by dependency. Returns the two run folders."""
    root = workspace / "runs-reference"
    proc = start_submit(workspace, cluster, root, ["recipes/smoke-pretrain.yaml", "recipes/smoke-instruct.yaml"],
                        PIPELINE)
    try:
        wait_for(lambda: len(run_dirs(root)) == 2 and all(read(d).get("slurm") for d in run_dirs(root)), 120,
                 "both stages submitted", root)
        first, second = run_dirs(root)
        wait_for(lambda: read(first)["status"] == "running", 300, "stage 1 running", root)
        pending = cluster.job(int(read(second)["slurm"]["job_id"]))
        assert read(first)["status"] == "running"
        assert (pending["JobState"], pending["Reason"]) == ("PENDING", "Dependency"), pending
        assert pending["Dependency"].startswith(f"afterok:{read(first)['slurm']['job_id']}"), pending
    finally:
        finish(proc, root, cluster)
    return run_dirs(root)


# -- tests --------------------------------------------------------------------------------------------
def test_two_stages_complete_in_order_through_sbatch(reference, cluster):
    first, second = (read(d) for d in reference)
    assert [first["status"], second["status"]] == ["completed", "completed"]
    assert second["recipe"]["init_from"] == f"run:{first['run_id']}"
    assert second["init_from"]["run_id"] == first["run_id"]  # the runtime's lineage record
    assert second["slurm"]["dependency"] == f"afterok:{first['slurm']['job_id']}"
    for record in (first, second):
        (attempt,) = record["attempts"]
        assert attempt["job_id"] == record["slurm"]["job_id"] and attempt["nodes"] == "localhost"
        assert (attempt["exit_reason"], attempt["exit_codes"]) == ("completed", [0, 0])
        assert cluster.job(int(attempt["job_id"]))["JobState"] == "COMPLETED"
    assert second["attempts"][0]["started_at"] >= first["attempts"][0]["ended_at"]
    for d in reference:
        for rank in (0, 1):
            log = (d / "logs" / f"rank-{rank}.log").read_text()
            assert f"===== attempt 1 rank {rank} (SLURM job" in log
        assert (d / "export" / "model_index.json").is_file()
        assert sorted(loss_history(d)) == list(range(1, read(d)["recipe"]["train"]["max_steps"] + 1))


def test_preempted_stage_requeues_resumes_and_matches_the_reference(reference, cluster, workspace):
    root = workspace / "runs-preempt"
    proc = start_submit(workspace, cluster, root, ["recipes/smoke-pretrain.yaml", "recipes/smoke-instruct.yaml"],
                        PIPELINE)
    try:
        wait_for(lambda: len(run_dirs(root)) == 2 and any(r["step"] >= 3 for r in metrics(run_dirs(root)[0])),
                 300, "stage 1 at step 3", root)
        high = cluster.run("sbatch", "--parsable", "--partition=high", "--ntasks=1", "--output=/dev/null",
                           "--wrap", "sleep 2").stdout.strip()
    finally:
        finish(proc, root, cluster)
    first_dir, second_dir = run_dirs(root)
    first, second = read(first_dir), read(second_dir)
    assert [first["status"], second["status"]] == ["completed", "completed"]
    reasons = [a["exit_reason"] for a in first["attempts"]]
    assert reasons[0] == "preempted" and reasons[-1] == "completed", first["attempts"]
    assert first["attempts"][0]["exit_codes"] == [75, 75]
    assert len({a["job_id"] for a in first["attempts"]}) == 1  # requeued: the same job id
    assert int(cluster.job(int(first["slurm"]["job_id"]))["Restarts"]) >= 1
    assert cluster.job(int(high))["JobState"] == "COMPLETED"
    saved = max(r["step"] for r in metrics(first_dir) if r["attempt"] == 1)
    assert saved < 12
    logs = unigen(workspace, cluster, root, "logs", first["run_id"], "--rank", "1").stdout
    assert "===== attempt 2 rank 1 (SLURM job" in logs and f"resumed at step {saved}" in logs
    # stage 2 waited on afterok across the requeue, and started from the resumed run's final checkpoint
    assert second["attempts"][0]["started_at"] >= first["attempts"][-1]["ended_at"]
    for got, want in zip((first_dir, second_dir), reference):
        assert loss_history(got) == loss_history(want)
        assert_same_weights(got, want)


def _seconds(runtime: str) -> int:
    """scontrol's RunTime ([D-][HH:]MM:SS) in seconds."""
    days, _, clock = runtime.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


def test_time_limit_signal_requeues_and_resumes(cluster, workspace):
    root = workspace / "runs-timelimit"
    proc = start_submit(workspace, cluster, root, ["recipes/smoke-pretrain.yaml"],
                        ["train.max_steps=80", *COMMON, "profile.slurm.signal_grace_s=115"])
    try:
        wait_for(lambda: run_dirs(root) and any(r["step"] >= 2 for r in metrics(run_dirs(root)[0])), 300,
                 "step 2", root)
        run_dir = run_dirs(root)[0]
        job = read(run_dir)["slurm"]["job_id"]
        # Now that it trains, shorten its time limit to 61-120 s from now (SLURM counts whole minutes,
        # and start-up alone can pass one minute on a loaded 2-core machine): slurmctld's limit sweep
        # (every 30 s) then sends the --signal=USR2@115 of the script, and kills the job at the limit.
        elapsed = _seconds(cluster.job(int(job))["RunTime"])
        cluster.run("scontrol", "update", f"JobId={job}", f"TimeLimit={elapsed // 60 + 2}")
        wait_for(lambda: read(run_dir)["attempts"][0].get("ended_at"), 300, "the first attempt to end", root)
        # Give the requeued attempt time to finish: the shortened limit would stop it again.
        cluster.run("scontrol", "update", f"JobId={job}", "TimeLimit=30")
    finally:
        finish(proc, root, cluster)
    record = read(run_dir)
    assert record["status"] == "completed"
    first, *_, last = record["attempts"]
    assert (first["exit_reason"], first["exit_codes"]) == ("timeout", [75, 75]), record["attempts"]
    assert last["exit_reason"] == "completed"
    saved = max(r["step"] for r in metrics(run_dir) if r["attempt"] == 1)
    assert 2 <= saved < 80
    assert f"resumed at step {saved}" in (run_dir / "logs" / "rank-0.log").read_text()
    assert sorted(loss_history(run_dir)) == list(range(1, 81))


def test_two_nodes_one_rank_each_match_the_single_node_run(reference, slurm_cluster_2n, workspace):
    root = workspace / "runs-2n"
    proc = start_submit(workspace, slurm_cluster_2n, root, ["recipes/smoke-pretrain.yaml"],
                        [*PRETRAIN, "profile.resources.nodes=2", "profile.resources.ranks_per_node=1"])
    finish(proc, root, slurm_cluster_2n)
    (run_dir,) = run_dirs(root)
    record = read(run_dir)
    assert record["status"] == "completed"
    (attempt,) = record["attempts"]
    assert (attempt["nodes"], attempt["hosts"]) == ("n[1-2]", ["n1", "n2"])
    exits = [json.loads((run_dir / "slurm" / "attempt-1" / f"rank-{r}.exit").read_text()) for r in (0, 1)]
    assert [e["node"] for e in exits] == ["n1", "n2"]
    assert record["recipe"]["deepspeed"]["zero_stage"] == 3
    assert loss_history(run_dir) == loss_history(reference[0])
    assert_same_weights(run_dir, reference[0])


def test_sbatch_reads_quoted_values_back_and_cancel_of_a_pending_run(cluster, workspace):
    root = workspace / "runs-quoting"
    comment = "a b;#c $(echo x) 'q' \"d\" \\e"
    out = unigen(workspace, cluster, root, "submit", "recipes/smoke-pretrain.yaml", "--profile", str(PROFILE),
                 "--name", "odd name; $(x)", *PRETRAIN,
                 f"profile.slurm.extra_sbatch=[\"--comment={json.dumps(comment)[1:-1]}\", \"--hold\"]")
    assert out.returncode == 0, out.stderr
    (run_dir,) = run_dirs(root)
    record = read(run_dir)
    job = cluster.job(int(record["slurm"]["job_id"]))
    assert job["Comment"] == comment
    assert job["JobName"] == record["run_id"] and record["run_id"].startswith("odd-name-x-")
    assert (job["JobState"], job["Reason"]) == ("PENDING", "JobHeldUser")
    status = unigen(workspace, cluster, root, "status", record["run_id"])
    assert f"status:     queued (job {record['slurm']['job_id']} PENDING (JobHeldUser))" in status.stdout, status
    out = unigen(workspace, cluster, root, "cancel", record["run_id"])
    assert out.returncode == 0 and "cancelled SLURM job" in out.stdout, out
    assert read(run_dir)["status"] == "cancelled"
    assert wait_until(lambda: cluster.job(int(record["slurm"]["job_id"]))["JobState"] == "CANCELLED", 30)


def test_cancel_of_a_running_run_saves_and_stops_then_resume_finishes_it(cluster, workspace):
    root = workspace / "runs-cancel"
    out = unigen(workspace, cluster, root, "submit", "recipes/smoke-pretrain.yaml", "--profile", str(PROFILE),
                 "train.max_steps=20", *COMMON)
    assert out.returncode == 0, out.stderr
    assert "follow with `unigen status" in out.stdout
    (run_dir,) = run_dirs(root)
    wait_for(lambda: any(r["step"] >= 2 for r in metrics(run_dir)), 300, "step 2", root)
    out = unigen(workspace, cluster, root, "cancel", run_dir.name)
    assert out.returncode == 0 and "save a checkpoint and stop" in out.stdout, out
    wait_for(lambda: read(run_dir)["status"] == "cancelled", 120, "the run to end cancelled", root)
    job_id = int(read(run_dir)["slurm"]["job_id"])
    assert wait_until(lambda: cluster.job(job_id)["JobState"] in ("FAILED", "COMPLETED"), 60)
    record = read(run_dir)
    (attempt,) = record["attempts"]
    assert (attempt["exit_reason"], attempt["exit_codes"]) == ("cancelled", [75, 75])
    assert cluster.job(job_id)["Restarts"] == "0"
    stopped = int((run_dir / "logs" / "rank-0.log").read_text().split("stopping at step ")[1].split()[0])
    assert stopped < 20 and (run_dir / "checkpoints" / f"step-{stopped}" / "COMMIT.json").is_file()
    # `unigen resume` hands the run back to the launcher: a new job, starting from that checkpoint
    out = unigen(workspace, cluster, root, "resume", run_dir.name, "--wait", timeout=RUN_TIMEOUT)
    assert out.returncode == 0, out.stderr[-3000:]
    record = read(run_dir)
    assert record["status"] == "completed" and record["slurm"]["job_id"] != str(job_id)
    assert [a["exit_reason"] for a in record["attempts"]] == ["cancelled", "completed"]
    assert f"resumed at step {stopped}" in (run_dir / "logs" / "rank-0.log").read_text()


def test_a_user_error_fails_the_run_once_and_cancels_the_later_stage(cluster, workspace):
    root = workspace / "runs-fatal"
    # A step folder with a COMMIT.json passes `unigen submit`'s init_from check (presence only) and
    # fails the run's own verification at its start: a CheckpointError, exit 2.
    bogus = workspace / "not-a-checkpoint" / "step-4"
    bogus.mkdir(parents=True)
    (bogus / "COMMIT.json").write_text("{}")
    proc = start_submit(workspace, cluster, root, ["recipes/smoke-pretrain.yaml", "recipes/smoke-instruct.yaml"],
                        [*PIPELINE, "pretrain:init_from=not-a-checkpoint/step-4"])
    assert proc.wait(timeout=RUN_TIMEOUT) == 1, submit_log(root)
    first_dir, second_dir = run_dirs(root)
    first, second = read(first_dir), read(second_dir)
    assert first["status"] == "failed" and "none verifies: step-4" in first["error"], first["error"]
    (attempt,) = first["attempts"]  # exit 2 is never requeued, whatever the failure budget
    assert (attempt["exit_reason"], attempt["exit_code"]) == ("crashed", 2)
    assert cluster.job(int(first["slurm"]["job_id"]))["Restarts"] == "0"
    assert second["status"] == "cancelled" and second["attempts"] == []
    assert second["error"] == f"not started: the previous stage {first['run_id']} failed"
    assert wait_until(lambda: cluster.job(int(second["slurm"]["job_id"]))["JobState"] == "CANCELLED", 30)
