"""The job side of a SLURM run: ``run_job(RUN_DIR)``, the body submitit runs on the batch host.

submitit's job side (``python -m submitit.core._submit RUN_DIR/slurm``, the last line of the batch
script) unpickles and calls ``run_job`` once per attempt (SLURM re-runs the script after every
requeue). The driver it runs:
1. closes an attempt a killed predecessor left open (as ``lost``), checks the budgets, and stops
   early when the run was cancelled or already ended;
2. records the attempt in run.json (job id, node list, start), picks MASTER_ADDR (the first node's
   address) and MASTER_PORT (from the job id, see ``master_port``);
3. runs ``srun`` with one task per rank (``slurm.task``), each running the per-rank runtime;
4. reads every rank's exit code and decides (``slurm.policy.decide``: ``attempt_policy``'s rule with
   SLURM's budgets): completed, requeue, or failed. A requeue is ``scontrol requeue $SLURM_JOB_ID``
   issued here, after the ranks exited, never from a signal handler (the driver replaces submitit's
   USR2 and TERM handlers: submitit's would checkpoint on rank 0 alone);
5. when the run ends without completing, cancels the later stages (their jobs wait on afterok).

The job exits 0 only when the run completed, so the next stage's ``afterok`` fires only then. Torch-free.
"""
from __future__ import annotations

import collections
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from unigen.orchestrator.config.recorded import recorded_profile
from unigen.orchestrator.launchers import LOG_FORMAT
from unigen.orchestrator.launchers.slurm import tools
from unigen.orchestrator.launchers.slurm.policy import Decision, budget_exhausted, decide, requeue_cause
from unigen.orchestrator.launchers.slurm.submission import cancel as cancel_job, ranks_per_node
from unigen.orchestrator.launchers.slurm.task import read_exit
from unigen.orchestrator.runs import TERMINAL, RunLedger

log = logging.getLogger("unigen.slurm")

PORT_BASE, PORT_SPAN = 20000, 20000
TERM_WAIT_S = 2.0  # after SIGTERM, how long the ranks may take to leave their exit codes


def master_port(job_id: int, restart: int) -> int:
    """MASTER_PORT in [20000, 40000): 20000 + 2 x (job id mod 10000) + (restart mod 2). Jobs whose ids
    differ by less than 10000 never share a port on a node, and consecutive attempts of one job
    alternate between two ports, so a restart does not wait for the previous listener's TIME_WAIT."""
    return PORT_BASE + 2 * (job_id % (PORT_SPAN // 2)) + restart % 2


def pick_port(job_id: int, restart: int, *, on_master: bool) -> int:
    """The derived port; on the master node (where the driver runs, normally), the next free one of
    the same parity when something else holds it."""
    port = master_port(job_id, restart)
    if not on_master:
        return port
    for k in range(50):
        candidate = PORT_BASE + (port - PORT_BASE + 2 * k) % PORT_SPAN
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("", candidate))
            except OSError:
                continue  # taken
        return candidate
    return port


class Driver:
    def __init__(self, run_dir: Path, environ: dict[str, str]):
        self.run_dir = run_dir
        self.ledger = RunLedger(run_dir)
        self.env = environ
        self.job_id = environ["SLURM_JOB_ID"]
        self.restart = int(environ.get("SLURM_RESTART_COUNT") or 0)
        self.terminated = False  # SIGTERM: scancel, a kill at the end of preemption grace or time limit

    # -- entry ----------------------------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        # Meant for the ranks; must not kill the driver (a handler, not SIG_IGN, which srun would inherit).
        signal.signal(signal.SIGUSR2, lambda *_: None)
        record = self.ledger.read()
        last = record["attempts"][-1] if record["attempts"] else None
        if last is not None and last.get("ended_at") is None:
            log.warning("attempt %d never recorded its end (its driver was killed): marking it lost", last["attempt"])
            self.ledger.end_attempt(exit_reason="lost", exit_code=None, status="requeued")
            record = self.ledger.read()
        log.info("job %s (restart %d) on %s for run %s", self.job_id, self.restart,
                 self.env.get("SLURM_JOB_NODELIST"), record["run_id"])
        if record["status"] in TERMINAL:
            log.warning("run %s is already %s: nothing to do", record["run_id"], record["status"])
            return 0 if record["status"] == "completed" else 1
        if record.get("cancel_requested"):
            return self._finish("cancelled", "cancelled by `unigen cancel` before it started")
        why = budget_exhausted(_counted(record), recorded_profile(record).slurm)
        if why:
            return self._finish("failed", why)
        return self._attempt(record)

    def _on_term(self, signum, frame) -> None:  # noqa: ARG002
        self.terminated = True

    # -- one attempt ----------------------------------------------------------------------------
    def _attempt(self, record: dict[str, Any]) -> int:
        profile = recorded_profile(record)
        res = profile.resources
        from submitit import JobEnvironment  # the job runs under submitit: its node-list parser

        nodelist = self.env.get("SLURM_JOB_NODELIST") or socket.gethostname()
        hosts = JobEnvironment().hostnames
        here = self.env.get("SLURMD_NODENAME") or socket.gethostname()
        env_port = profile.env.get("MASTER_PORT")
        port = int(env_port) if env_port else pick_port(int(self.job_id), self.restart, on_master=hosts[0] == here)
        addr = profile.env.get("MASTER_ADDR") or tools.node_address(hosts[0])
        world = res.nodes * ranks_per_node(res)
        attempt = self.ledger.start_attempt(job_id=self.job_id, nodes=nodelist, hosts=hosts,
                                            restart=self.restart, master=f"{addr}:{port}")
        attempt_dir = self.run_dir / "slurm" / f"attempt-{attempt}"
        attempt_dir.mkdir(parents=True, exist_ok=True)
        env = dict(self.env, MASTER_ADDR=addr, MASTER_PORT=str(port), UNIGEN_ATTEMPT=str(attempt),
                   UNIGEN_JOB_ID=self.job_id, PYTHONUNBUFFERED="1")
        argv = ["srun", f"--ntasks={world}", f"--ntasks-per-node={ranks_per_node(res)}",
                f"--cpus-per-task={res.cpus_per_task}", "--kill-on-bad-exit=0", *profile.slurm.srun_args,
                sys.executable, "-m", "unigen.orchestrator.launchers.slurm.task", str(self.run_dir), str(attempt_dir)]
        log.info("attempt %d: %d ranks on %s, MASTER_ADDR=%s MASTER_PORT=%d", attempt, world, nodelist, addr, port)
        srun_tail = self._run_srun(argv, env)
        exits = [read_exit(attempt_dir / f"rank-{r}.exit") or {} for r in range(world)]
        codes = [None if e.get("code") is None else int(e["code"]) for e in exits]
        return self._conclude(codes, srun_tail)

    def _run_srun(self, argv: list[str], env: dict[str, str]) -> list[str]:
        """Run the training step to its end; returns the last lines srun printed (its own errors)."""
        tail: collections.deque[str] = collections.deque(maxlen=20)
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, errors="replace")

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                tail.append(line.rstrip())
                sys.stdout.write(line)
                sys.stdout.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        term_at = None
        while proc.poll() is None:
            if self.terminated:
                # SLURM is ending the job (scancel, end of preemption grace, time limit): it SIGKILLs
                # us after KillWait (30 s by default), so record the attempt now, not after srun.
                term_at = term_at or time.monotonic()
                if time.monotonic() - term_at > TERM_WAIT_S:
                    break
            time.sleep(0.2 if term_at else 1.0)
        reader.join(timeout=0.5 if self.terminated else 10)
        return list(tail)

    # -- the end of an attempt ------------------------------------------------------------------
    def _conclude(self, codes: list[int | None], srun_tail: list[str]) -> int:
        record = self.ledger.read()
        slurm = recorded_profile(record).slurm
        done = _counted(record)[:-1]
        info = self._job_info()
        cancelled = bool(record.get("cancel_requested")) or \
            (self.terminated and info is not None and info.get("JobState") == "CANCELLED")
        cause = requeue_cause(info, grace_s=slurm.signal_grace_s, now_ts=time.time())
        error = record.get("error")
        if None in codes:
            missing = [r for r, c in enumerate(codes) if c is None]
            why = f"ranks {missing} left no exit code; srun said: {' | '.join(srun_tail[-3:]) or '(nothing)'}"
            if self.terminated and cause == "timeout":
                why = ("killed at the time limit before every rank saved: raise slurm.signal_grace_s (one save "
                       "+ one step) or slurm.time; " + why)
            log.warning("%s", why)
            error = error or why
        decision = decide(codes, cause=cause, attempts=done, slurm=slurm, cancel_requested=cancelled, error=error)
        if self.terminated and cause == "preempted" and decision.status != "cancelled":
            # Killed at the end of the preemption grace time (the save did not finish, or it did and
            # we were slower): SLURM requeues a preempted job itself, so do not requeue it again.
            # The budget is checked when that next attempt starts.
            decision = Decision("preempted", "requeued", False, decision.exit_code)
        log.info("attempt ended: rank exit codes %s -> %s (%s)", codes, decision.exit_reason, decision.status)
        self.ledger.end_attempt(exit_reason=decision.exit_reason, exit_code=decision.exit_code,
                                status=decision.status, exit_codes=codes)
        if decision.error:
            self.ledger.set_error(decision.error)
        if decision.requeue:
            try:
                tools.requeue(self.job_id)
                log.info("requeued job %s: the next attempt resumes from the newest committed checkpoint",
                         self.job_id)
                return 0
            except tools.SlurmError as err:
                if self._was_requeued():  # the request took effect; only its answer was lost
                    log.warning("scontrol requeue reported %s, but job %s was requeued", err, self.job_id)
                    return 0
                return self._finish("failed", f"could not requeue job {self.job_id} ({err}); resume it with "
                                    "`unigen resume RUN`")
        if decision.status in ("failed", "cancelled"):
            cancel_later_stages(self.ledger.read(), decision.status)
        return 0 if decision.status == "completed" else 1

    def _job_info(self) -> dict[str, str] | None:
        try:
            # Asked while SLURM may be ending the job (time limit, preemption): see run_tool.
            return tools.job_info(self.job_id, survive_term=True)
        except tools.SlurmError as err:
            log.warning("%s", err)
            return None

    def _was_requeued(self) -> bool:
        """slurmctld counts a requeue in Restarts at once; this attempt started at ``self.restart``."""
        info = self._job_info()
        restarts = (info or {}).get("Restarts", "")
        return restarts.isdigit() and int(restarts) > self.restart

    def _finish(self, status: str, error: str) -> int:
        log.error("run %s: %s", self.run_dir.name, error)
        self.ledger.set_status(status, error=error)
        cancel_later_stages(self.ledger.read(), status)
        return 1


def _counted(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The attempts the budgets count: those since the latest submission (``unigen resume`` of a run
    that exhausted a budget starts with fresh budgets)."""
    return record["attempts"][int((record.get("slurm") or {}).get("budget_from") or 0):]


def cancel_later_stages(record: dict[str, Any], ended: str) -> None:
    """Cancel the stages after ``record``'s run, which ``ended`` (e.g. "failed", "was cancelled"): the
    job of each (it waits on afterok) and its run."""
    why = f"not started: the previous stage {record['run_id']} {ended}"
    for later in (record.get("slurm") or {}).get("later_runs") or []:
        ledger = RunLedger(later)
        try:
            later_record = ledger.read()
        except Exception as err:  # noqa: BLE001 - one unreadable later stage must not stop the others
            log.warning("cannot read %s: %s", ledger.paths.ledger, err)
            continue
        if later_record["status"] in TERMINAL:
            continue
        job_id = (later_record.get("slurm") or {}).get("job_id")
        if job_id:
            try:
                cancel_job(job_id, ledger.paths.root)
            except tools.SlurmError as err:
                log.warning("%s", err)
        ledger.set_status("cancelled", error=why)


def _setup_logging(run_dir: Path) -> None:
    fmt = logging.Formatter(LOG_FORMAT)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    out = logging.StreamHandler(sys.stdout)  # the batch log, logs/slurm-<job id>.out
    out.setFormatter(fmt)
    root.addHandler(out)
    try:
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        launcher_log = logging.FileHandler(run_dir / "logs" / "launcher.log")
        launcher_log.setFormatter(fmt)
        root.addHandler(launcher_log)
    except OSError:
        pass


def run_job(run_dir: str) -> int:
    """The job's body (pickled by ``slurm.submission.submit``). Ends the process with the driver's exit
    code when it is not 0: submitit would record a returned value as success, and afterok must not fire."""
    path = Path(run_dir)
    _setup_logging(path)
    try:
        code = Driver(path, dict(os.environ)).run()
    except Exception as err:  # noqa: BLE001 - record it where `unigen status` looks, then fail the job
        log.exception("the SLURM driver of %s failed", path)
        try:
            ledger = RunLedger(path)
            if ledger.read()["status"] not in TERMINAL:
                ledger.set_status("failed", error=f"the SLURM driver failed: {type(err).__name__}: {err}")
        except Exception:  # noqa: BLE001 - nothing more to do than the traceback in the batch log
            pass
        code = 1
    if code:
        raise SystemExit(code)
    return 0
