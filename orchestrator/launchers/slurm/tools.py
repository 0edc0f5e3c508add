"""The SLURM client commands unigen calls itself (scontrol, scancel --signal), each with a timeout,
an argv list (never a shell string) and errors that say which command failed and why. sbatch and the
plain cancel go through submitit (``slurm.submission``).

Used on the submitting side (launcher) and inside the job (job-side driver). Torch-free.
"""
from __future__ import annotations

import datetime as _dt
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

from unigen.orchestrator.errors import UserError

TOOL_TIMEOUT_S = 60.0
# `scontrol show job -o` prints `Key=value Key=value ...` where values may hold spaces (Command=,
# WorkDir=, Reason=): split at each ` Key=` instead of at every space.
_KEY = re.compile(r"(?:^| )([A-Za-z][A-Za-z0-9_:/]*)=")
# Job states after which a job will not run again (unless requeued, which turns it PENDING).
ENDED_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                          "BOOT_FAIL", "DEADLINE", "PREEMPTED", "SPECIAL_EXIT", "REVOKED"})
_NONE = {"", "None", "Unknown", "(null)", "N/A"}


class SlurmError(UserError):
    """A SLURM command failed (not found, timed out, or exited non-zero); the message says which and
    what to check. A UserError: the CLI prints it as one `error:` line."""


def _ignore_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def run_tool(argv: list[str], *, timeout: float = TOOL_TIMEOUT_S, check: bool = True,
             cwd: str | Path | None = None, survive_term: bool = False) -> subprocess.CompletedProcess:
    """``survive_term``: the command ignores SIGTERM (an ignored signal stays ignored across exec).
    For calls made inside a job: slurmstepd SIGTERMs every process of a step it ends, children
    included, so the ``scontrol requeue`` that ends our own job got killed before it could exit 0
    whenever the kill overtook slurmctld's reply, and the requeue, which had happened, read as failed."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              stdin=subprocess.DEVNULL, preexec_fn=_ignore_sigterm if survive_term else None)
    except FileNotFoundError:
        raise SlurmError(f"{argv[0]} not found on PATH: run unigen on a SLURM login node (or submit with "
                         "--profile local)") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"`{' '.join(argv[:3])} ...` did not answer within {timeout:.0f} s: is slurmctld up "
                         "(`scontrol ping`)?") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise SlurmError(f"{argv[0]} exited {proc.returncode}: {detail[-1] if detail else '(no message)'}")
    return proc


def parse_record(line: str) -> dict[str, str]:
    """One line of `scontrol show ... -o` as a dict."""
    text = line.strip()
    keys = list(_KEY.finditer(text))
    out: dict[str, str] = {}
    for i, m in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(text)
        out.setdefault(m.group(1), text[m.end():end].strip())
    return out


def job_info(job_id: str | int, *, survive_term: bool = False) -> dict[str, str] | None:
    """`scontrol show job -o JOB` as a dict, or None when slurmctld no longer knows the job."""
    proc = run_tool(["scontrol", "show", "job", "-o", str(job_id)], check=False, survive_term=survive_term)
    if proc.returncode != 0:
        if "Invalid job id" in proc.stderr:
            return None
        raise SlurmError(f"scontrol show job {job_id} exited {proc.returncode}: {proc.stderr.strip()}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return parse_record(lines[0]) if lines else None


def present(value: str | None) -> bool:
    """False for scontrol's spellings of "no value" (None, Unknown, (null))."""
    return value is not None and value.strip() not in _NONE


def parse_time(value: str | None) -> _dt.datetime | None:
    """scontrol's local timestamps (2026-01-02T03:04:05) as aware datetimes."""
    if not present(value):
        return None
    try:
        return _dt.datetime.fromisoformat(value.strip()).astimezone()
    except ValueError:
        return None


def node_address(node: str) -> str:
    """The address SLURM itself uses for a node (NodeAddr), which is what other nodes can reach; falls
    back to the node name when scontrol does not say."""
    proc = run_tool(["scontrol", "show", "node", "-o", node], check=False)
    if proc.returncode == 0 and proc.stdout.strip():
        addr = parse_record(proc.stdout.splitlines()[0]).get("NodeAddr")
        if present(addr):
            return addr
    return node


def signal_steps(job_id: str, sig: str) -> None:
    """Send ``sig`` to a job's steps, i.e. the ranks, not the batch host's driver (``scancel --signal``:
    submitit's job offers only a plain cancel)."""
    run_tool(["scancel", f"--signal={sig}", str(job_id)])


def requeue(job_id: str) -> None:
    """Requeue a job from inside it (the job-side driver): SLURM ends the job at once, so the command
    must outlive the SIGTERM that ending sends (see ``run_tool``)."""
    run_tool(["scontrol", "requeue", str(job_id)], survive_term=True)


def describe_state(info: dict[str, Any] | None) -> str:
    """A short line for `unigen status`: PENDING (Dependency), RUNNING on n[1-2], COMPLETED..."""
    if info is None:
        return "ENDED (no longer known to slurmctld)"
    state = info.get("JobState", "UNKNOWN")
    reason, nodes = info.get("Reason"), info.get("NodeList")
    if state == "PENDING" and present(reason):
        return f"PENDING ({reason})"
    if state in ("RUNNING", "COMPLETING") and present(nodes):
        return f"{state} on {nodes}"
    return state
