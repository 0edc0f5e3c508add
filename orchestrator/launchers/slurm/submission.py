"""One run as one SLURM job, submitted through submitit's ``SlurmExecutor``.

submitit renders the sbatch script, pickles the job's body into ``RUN_DIR/slurm/`` (the executor's
folder: ``<job id>_submission.sh``, ``<job id>_submitted.pkl``) and runs sbatch; ``cancel`` is its job's
cancel. The body is ``slurm.job.run_job(RUN_DIR)``, unigen's driver, run once on the batch host
(``use_srun=False``): the driver starts the ranks with its own srun, one task per rank, so it reads
every rank's exit code (submitit's srun gives one) and decides the requeue after a collective save.

Where submitit's defaults do not fit, and what is done instead:
- ``#SBATCH`` values: submitit writes them with ``shlex.quote``, but sbatch's own parser treats a
  backslash as an escape even inside single quotes (``'a\\b'`` reaches slurmctld as ``ab``). Each
  directive line submitit writes is read back (``shlex.split`` inverts ``shlex.quote``) and written
  again with ``sbatch_value``: double quotes, ``\\`` and ``"`` escaped (read back unchanged by sbatch
  22.05: tests/integration/test_slurm_launcher.py). A newline cannot be written there, so it is refused.
- The batch log: submitit points ``--output`` into its folder by absolute path, where sbatch would
  read a ``%`` of the run path as a pattern; here the job starts in ``RUN_DIR/logs`` (``--chdir``) and
  writes ``slurm-%j.out`` there, stderr included, as ``unigen logs`` expects.
- ``--requeue``, ``--kill-on-invalid-dep`` and ``slurm.extra_sbatch`` go in ``additional_parameters``;
  the profile's ``env`` and the ``cd`` to where `unigen submit` ran are setup lines after the profile's.
- submitit refuses to build an executor where ``srun`` is not on PATH; the preview (``--dry-run``)
  must work on a laptop, so that check is left out (``sbatch`` is looked for when submitting).
- The scheduler's word on a job (``unigen status``, the driver's requeue cause) comes from ``scontrol
  show job`` (``slurm.tools``), not submitit's ``job.state``: that reads sacct, which needs SLURM's
  accounting database (many clusters, and the test clusters, run without one) and does not report the
  Reason, Restarts or PreemptTime that unigen shows and decides on.
"""
from __future__ import annotations

import functools
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

from unigen.orchestrator.config.profile import Profile, ResourcesSection
from unigen.orchestrator.errors import UserError
from unigen.orchestrator.launchers.slurm.tools import SlurmError

_PLAIN = re.compile(r"^[A-Za-z0-9_@%+=:,./\-\[\]]+$")  # written without quotes (sbatch splits at blanks, stops at #)
_OPTION = re.compile(r"^--[A-Za-z][A-Za-z0-9-]*$")
_DIRECTIVE = re.compile(r"^#SBATCH (--[A-Za-z0-9-]+)=(.*)$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
BATCH_LOG = "slurm-%j.out"  # relative to the run's logs/ folder, the job's working directory


def _control_free(value: str, what: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise UserError(f"{what}: {value!r} holds a newline or control character, which sbatch cannot read; "
                        "write it on one line")
    return value


def sbatch_value(value: Any, what: str = "sbatch value") -> str:
    """``value`` as sbatch's own #SBATCH parser reads it back unchanged."""
    text = _control_free(str(value), what)
    if _PLAIN.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def requote(script: str) -> str:
    """submitit's script with every ``#SBATCH --key=value`` value quoted for sbatch (module docstring)."""
    lines = []
    for line in script.split("\n"):
        m = _DIRECTIVE.match(line)
        if m:
            (value,) = shlex.split(m.group(2))
            line = f"#SBATCH {m.group(1)}={sbatch_value(value, m.group(1))}"
        lines.append(line)
    return "\n".join(lines)


def ranks_per_node(resources: ResourcesSection) -> int:
    if resources.node_ranks < 1:
        raise UserError("resources: a CPU job (gpus_per_node: 0) needs resources.ranks_per_node")
    return resources.node_ranks


def extra_options(items: list[str]) -> dict[str, Any]:
    """``slurm.extra_sbatch`` (``--key=value`` or ``--flag``) as submitit's ``additional_parameters``."""
    out: dict[str, Any] = {}
    for i, item in enumerate(items):
        what = f"slurm.extra_sbatch.{i}"
        option, sep, value = _control_free(item.strip(), what).partition("=")
        if not _OPTION.match(option):
            raise UserError(f"{what}: {option!r} is not an sbatch option (write --key=value)")
        out[option[2:]] = value if sep else True
    return out


def setup_lines(profile: Profile, workdir: str) -> list[str]:
    """Shell lines before the driver: the profile's setup (kept as written), its env, the ``cd``."""
    lines = ["# profile slurm.setup", *profile.slurm.setup]
    env = profile.env
    for key in sorted(env):
        if not _ENV_NAME.match(key):
            raise UserError(f"env.{key}: not a valid environment variable name (letters, digits, _)")
        lines.append(f"export {key}={shlex.quote(str(env[key]))}")
    lines.append("# relative recipe and data paths resolve from where `unigen submit` ran")
    lines.append(f"cd {shlex.quote(workdir)} || exit 2")
    return lines


def parameters(profile: Profile, *, run_id: str, run_dir: Path, workdir: str,
               dependency: str | None) -> dict[str, Any]:
    """The profile (a SLURM one: its ``slurm`` section is set) as ``SlurmExecutor.update_parameters`` arguments."""
    res, slurm = profile.resources, profile.slurm
    params: dict[str, Any] = {"job_name": _control_free(run_id, "run id"), "nodes": res.nodes,
                              "ntasks_per_node": ranks_per_node(res), "cpus_per_task": res.cpus_per_task,
                              # USR2 reaches the job steps (the ranks), not the batch host's driver.
                              "signal_delay_s": slurm.signal_grace_s,
                              "use_srun": False, "stderr_to_stdout": True, "setup": setup_lines(profile, workdir),
                              "wckey": None}  # submitit's default tags every job "submitit"; keep the site's
    for key in ("partition", "account", "qos", "time", "constraint"):
        if getattr(slurm, key) not in (None, ""):
            params[key] = _control_free(str(getattr(slurm, key)), f"slurm.{key}")
    if res.gpus_per_node:
        params["gpus_per_node"] = res.gpus_per_node
    if res.mem_gb:
        params["mem"] = f"{int(res.mem_gb)}G" if float(res.mem_gb).is_integer() else f"{round(res.mem_gb * 1024)}M"
    if slurm.exclusive:
        params["exclusive"] = True
    extra: dict[str, Any] = {"requeue": True, "chdir": _control_free(str(run_dir / "logs"), "run folder"),
                             "output": BATCH_LOG}
    if dependency:
        params["dependency"] = dependency
        # A dependency that can never be met (stage N failed) cancels this job instead of leaving it
        # PENDING forever; the driver of stage N also marks this run cancelled.
        extra["kill-on-invalid-dep"] = "yes"
    extra.update(extra_options(slurm.extra_sbatch))
    params["additional_parameters"] = extra
    return params


@functools.cache
def _executor_class():
    import submitit  # lazily: `unigen --help` stays light

    class Executor(submitit.SlurmExecutor):
        @classmethod
        def affinity(cls) -> int:
            return 2  # no srun needed on the submitting host (module docstring)

        def _make_submission_file_text(self, command: str, uid: str) -> str:
            return requote(super()._make_submission_file_text(command, uid))

        @property
        def _submitit_command_str(self) -> str:
            # exec: the driver is the batch step's own process, as before submitit. A bash parent dies
            # of the SIGTERM that ends a job (time limit, end of preemption grace), and SLURM then
            # kills what is left of the step before the driver has recorded the attempt.
            return "exec " + super()._submitit_command_str

    return Executor


def executor(profile: Profile, *, run_id: str, run_dir: Path, workdir: str, dependency: str | None):
    """The executor of one run; its folder is ``RUN_DIR/slurm`` (created only when submitting)."""
    python = profile.slurm.python
    ex = _executor_class()(run_dir / "slurm", python=shlex.quote(python) if python else None)
    ex.update_parameters(**parameters(profile, run_id=run_id, run_dir=run_dir, workdir=workdir,
                                      dependency=dependency))
    return ex


def preview(profile: Profile, **where: Any) -> str:
    """The script ``submit`` would hand to sbatch (for ``--dry-run``)."""
    ex = executor(profile, **where)
    return ex._make_submission_file_text(ex._submitit_command_str, "preview")


def submit(profile: Profile, **where: Any) -> tuple[str, Path]:
    """Submit the run's job; returns (job id, the script submitted)."""
    from submitit.core.utils import FailedJobError  # what submitit raises when sbatch exits non-zero

    from unigen.orchestrator.launchers.slurm.job import run_job

    if shutil.which("sbatch") is None:
        raise SlurmError("sbatch not found on PATH: run unigen on a SLURM login node (or submit with --profile local)")
    ex = executor(profile, **where)
    try:
        job = ex.submit(run_job, str(where["run_dir"]))
    except FailedJobError as err:
        lines = str(err).strip().splitlines()
        scripts = sorted(ex.folder.glob(".submission_file_*.sh"), key=lambda p: p.stat().st_mtime)
        raise SlurmError(f"sbatch said: {lines[-1] if lines else '(no message)'}"
                         + (f"; the script is {scripts[-1]}" if scripts else "")) from None
    return job.job_id, job.paths.submission_file


def cancel(job_id: str, run_dir: Path) -> None:
    """Cancel the run's job (submitit's ``scancel``); a SlurmError says why it could not."""
    import submitit

    try:
        submitit.SlurmJob(folder=run_dir / "slurm", job_id=str(job_id)).cancel()
    except FileNotFoundError:
        raise SlurmError("scancel not found on PATH: run unigen on a SLURM login node") from None
    except subprocess.CalledProcessError as err:
        raise SlurmError(f"scancel {job_id} exited {err.returncode}") from None
