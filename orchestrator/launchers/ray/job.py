"""What the Ray launcher submits: one Ray Job per submission, and how the submitter reaches Ray.

- submission id ``unigen-<stage 1 run id>`` (``-2``, ``-3``... when ``unigen resume`` submits a run
  again): unique (run ids are), and recorded as the job id of every attempt of every stage;
- entrypoint ``python -m unigen.orchestrator.launchers.ray.driver --job-id ID --cwd DIR RUN_DIR...``,
  shell-quoted (the job supervisor runs it through a shell);
- runtime_env: the profile's, plus RAY_JOB_STOP_WAIT_TIME_S (how long ``ray job stop`` lets the
  driver cancel gracefully, i.e. let the ranks save) and PYTHONUNBUFFERED;
- the driver reserves no CPU (``entrypoint_num_cpus=0``): it only watches, the workers hold the
  resources.

Torch-free; ray is imported only where a client is made.
"""
from __future__ import annotations

import copy
import os
import shlex
from dataclasses import dataclass, field
from typing import Any

from unigen.orchestrator.errors import UserError

DRIVER_MODULE = "unigen.orchestrator.launchers.ray.driver"
TERMINAL_JOB_STATES = ("SUCCEEDED", "FAILED", "STOPPED")
ACTIVE_JOB_STATES = ("PENDING", "RUNNING")
# Beyond the ranks' save (cancel_grace_s) the driver needs a moment to record the outcome.
STOP_WAIT_MARGIN_S = 30
_ADDRESS_ENV = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")


@dataclass(frozen=True)
class JobSpec:
    submission_id: str
    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str] = field(default_factory=dict)
    entrypoint_num_cpus: float = 0


def submission_id_for(run_ids: list[str], resubmission: int = 0) -> str:
    """``unigen-<first run id>``; ``-<n+1>`` appended for the n-th resubmission (``unigen resume``)."""
    base = f"unigen-{run_ids[0]}"
    return f"{base}-{resubmission + 1}" if resubmission else base


def build_job(ray_cfg: Any, run_dirs: list[str], run_ids: list[str], *, cwd: str, resubmission: int = 0) -> JobSpec:
    """The Ray Job for the stages in ``run_dirs`` (in order), from a profile's ``ray`` section."""
    sid = submission_id_for(run_ids, resubmission)
    argv = [*shlex.split(ray_cfg.python), "-m", DRIVER_MODULE, "--job-id", sid, "--cwd", cwd, *run_dirs]
    runtime_env = copy.deepcopy(ray_cfg.runtime_env)
    env_vars = {str(k): str(v) for k, v in (runtime_env.get("env_vars") or {}).items()}
    env_vars.setdefault("RAY_JOB_STOP_WAIT_TIME_S", str(ray_cfg.cancel_grace_s + STOP_WAIT_MARGIN_S))
    env_vars.setdefault("PYTHONUNBUFFERED", "1")
    runtime_env["env_vars"] = env_vars
    return JobSpec(submission_id=sid, entrypoint=shlex.join(argv), runtime_env=runtime_env,
                   metadata={"unigen_runs": " ".join(run_ids)})


def connect(address: str):
    """A JobSubmissionClient for a profile's ``ray.address`` (``auto``: $RAY_ADDRESS, else local)."""
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError:
        raise UserError("the ray launcher needs Ray: pip install 'unigen[ray]' (ray[default])") from None
    explicit = None if address in ("", "auto", None) else address
    # Ray lets RAY_ADDRESS override the address a client is given; a profile's explicit address must
    # win (a stale RAY_ADDRESS in a shell would send the job to another cluster).
    saved = {k: os.environ.pop(k) for k in _ADDRESS_ENV if explicit and k in os.environ}
    try:
        return JobSubmissionClient(explicit)
    except Exception as e:  # noqa: BLE001 - connection refused, DNS, version check: all the same fix
        raise UserError(f"cannot reach the Ray cluster at ray.address={address!r} ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200] if str(e) else ''}): start the head or fix the profile "
                        "(its dashboard address, http://<head>:8265)") from None
    finally:
        os.environ.update(saved)


def job_status(client, submission_id: str) -> str:
    """The job's status name (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)."""
    status = client.get_job_status(submission_id)
    return str(getattr(status, "value", status))
