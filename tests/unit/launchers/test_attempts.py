"""The attempt loop of the Ray driver and the local supervisor, on real child processes instead of Ray
actors: restarts within ray.max_failures, 75 restarted at once, 2 never restarted, cancel (ranks save, run
cancelled), peers of a dead rank stopped, stages in order, and what run.json records for every attempt."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time


from tests.unit.tracking.tracking_helpers import recipe_model
from unigen.orchestrator.config.profile import Profile
from unigen.orchestrator.launchers.attempts import RunAttempts, Settings, WorkerInfo, run_stages
from unigen.orchestrator.runs import RunLedger

JOB = "unigen-test-job"
# A stand-in rank: SIGTERM -> "saved, requeue me" (75) like the runtime; else sleep, then exit.
# With an error, it writes it to run.json first, as the runtime's rank 0 does for a user error.
RANK = ("import os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(75) if {save} else None)\n"
        "open({run_dir!r} + '/ready-' + str(os.getpid()), 'w').close()\n"
        "if {error!r}:\n"
        "    from unigen.orchestrator.runs import RunLedger\n"
        "    RunLedger({run_dir!r}).update(lambda r: r.__setitem__('error', {error!r}))\n"
        "time.sleep({sleep})\n"
        "sys.exit({code})\n")


def behave(code=0, sleep=0.2, save=True, error=""):
    return {"code": code, "sleep": sleep, "save": save, "error": error}


class ScriptedGroup:
    """A RankGroup whose ranks are local processes acting out one scripted attempt."""

    def __init__(self, script, log, *, places=True):
        self.script = script
        self.log = log  # shared across attempts: what the loop did
        self.places = places
        self.procs = []

    def place(self, should_stop):
        while not self.places:  # a cluster without room: only a cancel ends the wait
            if should_stop():
                self.log.append("gave up waiting")
                return None
            time.sleep(0.05)
        return [WorkerInfo(i, "node-a", "127.0.0.1", "host-a") for i in range(len(self.script))]

    def free_port(self):
        return 29999

    def missing_paths(self, paths):
        return []

    def start(self, slots, *, run_dir, cwd, header):
        self.log.append(("start", header, [dict(s.env) for s in slots]))
        for slot, b in zip(slots, self.script):
            self.procs.append(subprocess.Popen([sys.executable, "-c", RANK.format(run_dir=run_dir, **b)]))
        return [{"pid": p.pid, "host": "host-a"} for p in self.procs]

    def poll(self):
        return [p.poll() for p in self.procs]

    def signal(self, signum):
        self.log.append(("signal", signum))
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signum)

    def kill(self):
        self.log.append("kill")
        for p in self.procs:
            if p.poll() is None:
                p.kill()

    def release(self):
        self.log.append("release")
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def make_ledger(root, name="r1"):
    return RunLedger.create(root, run_id=name, recipe=recipe_model("r", "pretrain", max_steps=4),
                            recipe_path="r.yaml", recipe_sha256="0",
                            profile=Profile.model_validate({"name": "p", "launcher": "ray"}))


def attempts_for(ledger, scripts, log, *, max_failures=2, stopping=lambda: False, places=True, **kw):
    queue = list(scripts)
    settings = Settings(job_id=JOB, gpus=False, max_failures=max_failures, cancel_grace_s=kw.pop("cancel_grace_s", 30),
                        peer_grace_s=kw.pop("peer_grace_s", 0.5), poll_s=0.05, env={"OMP_NUM_THREADS": "1"})
    return RunAttempts(ledger, lambda: ScriptedGroup(queue.pop(0), log, places=places), settings, stopping=stopping)


def test_a_crashed_worker_restarts_the_group_and_the_run_completes(tmp_path):
    ledger, log = make_ledger(tmp_path), []
    # Attempt 1: rank 1 dies; rank 0 hangs (a collective whose partner vanished) and ignores SIGTERM.
    scripts = [[behave(0, sleep=60, save=False), behave(-9, sleep=0.1)], [behave(0), behave(0)]]
    assert attempts_for(ledger, scripts, log).run() == "completed"
    record = ledger.read()
    assert record["status"] == "completed" and record["error"] is None
    first, second = record["attempts"]
    assert first["exit_reason"] == "crashed" and first["job_id"] == JOB and first["nodes"] == "host-a"
    assert first["exit_codes"][0] == -signal.SIGKILL  # the hanging peer was stopped after the grace
    assert first["detail"].startswith("rank 1 ")  # the cause comes first
    assert second["exit_reason"] == "completed" and second["exit_codes"] == [0, 0]
    assert [r["rank"] for r in second["ranks"]] == [0, 1] and all(r["pid"] for r in second["ranks"])
    assert "kill" in log and log.count("release") == 2
    envs = [entry[2] for entry in log if entry[0] == "start"]
    assert [e[1]["UNIGEN_ATTEMPT"] for e in envs] == ["1", "2"]
    assert envs[0][1]["RANK"] == "1" and envs[0][1]["WORLD_SIZE"] == "2" and envs[0][1]["UNIGEN_JOB_ID"] == JOB
    assert envs[0][0]["OMP_NUM_THREADS"] == "1" and envs[0][0]["MASTER_PORT"] == "29999"


def test_crashes_beyond_max_failures_fail_the_run(tmp_path):
    ledger, log = make_ledger(tmp_path), []
    scripts = [[behave(1), behave(0)] for _ in range(3)]
    assert attempts_for(ledger, scripts, log, max_failures=1).run() == "failed"
    record = ledger.read()
    assert [a["exit_reason"] for a in record["attempts"]] == ["crashed", "crashed"]
    assert record["status"] == "failed" and "ray.max_failures=1" in record["error"]


def test_exit_2_fails_at_once_without_restart(tmp_path):
    ledger, log = make_ledger(tmp_path), []
    ledger.update(lambda r: r.__setitem__("error", "an old crash"))  # cleared when an attempt starts
    scripts = [[behave(2, error="recipe.init_from: no such run"), behave(2)], [behave(0), behave(0)]]
    assert attempts_for(ledger, scripts, log, max_failures=5).run() == "failed"
    record = ledger.read()
    assert len(record["attempts"]) == 1 and record["attempts"][0]["exit_code"] == 2
    assert record["error"] == "recipe.init_from: no such run"  # the runtime's precise message is kept
    assert record["attempts"][0]["error"] == "recipe.init_from: no such run"


def test_a_crash_message_stays_with_its_attempt_and_a_completed_run_shows_none(tmp_path):
    ledger, log = make_ledger(tmp_path), []
    scripts = [[behave(1, error="RuntimeError: gloo peer reset"), behave(1)], [behave(0), behave(0)]]
    assert attempts_for(ledger, scripts, log).run() == "completed"
    record = ledger.read()
    assert record["error"] is None
    assert record["attempts"][0]["error"] == "RuntimeError: gloo peer reset" and "error" not in record["attempts"][1]


def test_all_ranks_75_restart_at_once_outside_the_failure_budget(tmp_path):
    ledger, log = make_ledger(tmp_path), []
    scripts = [[behave(75), behave(75)], [behave(75), behave(0)], [behave(0), behave(0)]]
    assert attempts_for(ledger, scripts, log, max_failures=0).run() == "completed"
    reasons = [a["exit_reason"] for a in ledger.read()["attempts"]]
    assert reasons == ["requeue", "requeue", "completed"]


def test_cancel_requested_in_run_json_makes_ranks_save_and_cancels(tmp_path):
    ledger, log = make_ledger(tmp_path), []
    scripts = [[behave(0, sleep=60), behave(0, sleep=60)]]
    runner = attempts_for(ledger, scripts, log)
    thread = threading.Thread(target=lambda: log.append(("result", runner.run())))
    thread.start()
    deadline = time.monotonic() + 60
    while len(list(ledger.paths.root.glob("ready-*"))) < 2:  # both handlers installed
        assert time.monotonic() < deadline, "the attempt never started"
        time.sleep(0.05)
    ledger.update(lambda r: r.__setitem__("cancel_requested", "now"))  # what `unigen cancel` writes
    thread.join(60)
    assert ("result", "cancelled") in log and ("signal", signal.SIGTERM) in log and "kill" not in log
    record = ledger.read()
    assert record["status"] == "cancelled"
    assert record["attempts"][-1]["exit_reason"] == "cancelled" and record["attempts"][-1]["exit_codes"] == [75, 75]
    assert "saved a checkpoint" in record["attempts"][-1]["detail"]


def test_ranks_that_do_not_save_in_time_are_killed_after_cancel_grace(tmp_path):
    ledger, log = make_ledger(tmp_path), []
    scripts = [[behave(0, sleep=60, save=False)]]
    flag = {"stop": False}
    runner = attempts_for(ledger, scripts, log, stopping=lambda: flag["stop"], cancel_grace_s=0.3)

    def stop_once_ready():  # what SIGTERM to the driver does, once the rank ignores SIGTERM
        while not list(ledger.paths.root.glob("ready-*")):
            time.sleep(0.05)
        flag["stop"] = True

    threading.Thread(target=stop_once_ready, daemon=True).start()
    assert runner.run() == "cancelled"
    assert "kill" in log and ledger.read()["attempts"][-1]["exit_codes"] == [-signal.SIGKILL]


def test_cancel_while_waiting_for_workers_starts_no_attempt(tmp_path):
    ledger, log = make_ledger(tmp_path), []
    runner = attempts_for(ledger, [[behave()]], log, places=False)
    threading.Timer(0.5, lambda: ledger.update(lambda r: r.__setitem__("cancel_requested", "now"))).start()
    assert runner.run() == "cancelled"
    assert "gave up waiting" in log and ledger.read()["attempts"] == []


def test_stages_run_in_order_and_stop_after_a_failed_one(tmp_path):
    log = []
    ledgers = [make_ledger(tmp_path, f"s{i}") for i in range(3)]
    scripts = {"s0": [[behave(0)]], "s1": [[behave(1)]], "s2": [[behave(0)]]}
    order = []

    def make(ledger):
        order.append(ledger.run_id)
        return attempts_for(ledger, scripts[ledger.run_id], log, max_failures=0)

    assert run_stages(ledgers, make) == 1
    assert order == ["s0", "s1"]  # s2 never started
    statuses = [ledger.read()["status"] for ledger in ledgers]
    assert statuses == ["completed", "failed", "cancelled"]
    assert "previous stage s1 did not complete" in ledgers[2].read()["error"]
    assert (tmp_path / "s0" / "logs" / "launcher.log").read_text().count("driver started") == 1


def test_a_driver_error_fails_the_run_instead_of_leaving_it_running(tmp_path):
    ledgers = [make_ledger(tmp_path, "s0"), make_ledger(tmp_path, "s1")]

    class Broken:
        def run(self):
            ledgers[0].start_attempt(job_id=JOB, nodes="host-a")
            raise ConnectionError("GCS went away")

    assert run_stages(ledgers, lambda ledger: Broken()) == 1
    record = ledgers[0].read()
    assert record["status"] == "failed" and record["attempts"][0]["exit_reason"] == "lost"
    assert "the Ray driver failed: ConnectionError: GCS went away" in record["error"]
    assert ledgers[1].read()["status"] == "cancelled"


def test_workers_that_fail_to_start_count_as_a_crash_and_are_retried(tmp_path):
    ledger, log = make_ledger(tmp_path), []
    scripts = [[behave(0)], [behave(0)]]
    runner = attempts_for(ledger, scripts, log, max_failures=1)
    real = runner.make_group
    calls = []

    def make_group():
        group = real()
        if not calls:  # the first placement fails, as when an actor's runtime_env cannot be built
            group.place = lambda should_stop: (_ for _ in ()).throw(TimeoutError("actors did not start"))
        calls.append(group)
        return group

    runner.make_group = make_group
    assert runner.run() == "completed"
    assert len(calls) == 2 and [a["exit_reason"] for a in ledger.read()["attempts"]] == ["completed"]
