"""The sbatch script of one run: profile fields -> #SBATCH directives, setup lines, environment, and
the job-side driver (``python -m unigen.orchestrator.launchers.slurm_job RUN_DIR``).

Two quoting rules, because a script is read by two parsers:
- ``#SBATCH`` lines are parsed by sbatch, not by a shell: quotes group words much as in a shell, but
  a backslash escapes the next character even inside single quotes (``shlex.quote('a\\b')``, what
  submitit writes, reaches slurmctld as ``ab``) and an unquoted ``#`` starts a comment. Values that
  are not plain are written in double quotes with ``\\`` and ``"`` escaped (read back unchanged by
  sbatch 22.05: tests/integration/test_slurm_launcher.py). A newline cannot be written there at all,
  so it is refused. No path goes into a directive: sbatch runs from the run's ``logs/`` folder and
  ``--output`` is relative to it.
- Everything after the directives is bash: every path and value is ``shlex.quote``d (a newline
  inside single quotes is fine). Setup lines are shell code the profile owner wrote, kept as is.

One task per rank (per GPU on GPU nodes): ``--ntasks-per-node`` ranks per node, each seeing every GPU
of its node and picking ``cuda:LOCAL_RANK``.
"""
from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from typing import Any

from unigen.orchestrator.errors import UserError

# What a directive value may be without quotes (sbatch splits at blanks, stops at #).
_PLAIN = re.compile(r"^[A-Za-z0-9_@%+=:,./\-\[\]]+$")
_OPTION = re.compile(r"^--[A-Za-z][A-Za-z0-9-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
JOB_MODULE = "unigen.orchestrator.launchers.slurm_job"
BATCH_LOG = "slurm-%j.out"  # relative to the run's logs/ folder, where sbatch is run


@dataclass(frozen=True)
class ScriptInputs:
    """What a script needs besides the profile: who the run is and where things are."""

    run_id: str
    run_dir: str
    workdir: str  # where `unigen submit` ran: relative recipe and data paths resolve from there
    stage: int = 1
    stages: int = 1
    stage_name: str = "pretrain"
    recipe_path: str = ""
    dependency: str | None = None  # afterok:<job id> for stage N+1


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


def directive(option: str, value: Any = None, what: str | None = None) -> str:
    """``#SBATCH --option[=value]``."""
    if not _OPTION.match(option):
        raise UserError(f"{what or option}: {option!r} is not an sbatch option (write --key=value)")
    return f"#SBATCH {option}" if value is None else f"#SBATCH {option}={sbatch_value(value, what or option)}"


def extra_directive(line: str, index: int) -> str:
    """One ``slurm.extra_sbatch`` item (``--key=value`` or ``--flag``) as a directive."""
    what = f"slurm.extra_sbatch.{index}"
    option, sep, value = _control_free(line.strip(), what).partition("=")
    return directive(option, value if sep else None, what)


def comment(text: str) -> str:
    """Text safe inside a ``#`` comment line: control characters (a newline would end the comment and
    start a command) are written as escapes."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def mem_value(mem_gb: float) -> str:
    return f"{int(mem_gb)}G" if float(mem_gb).is_integer() else f"{int(round(mem_gb * 1024))}M"


def ranks_per_node(resources: dict[str, Any]) -> int:
    per_node = resources.get("ranks_per_node") or resources.get("gpus_per_node") or 0
    if per_node < 1:
        raise UserError("resources: a CPU job (gpus_per_node: 0) needs resources.ranks_per_node")
    return int(per_node)


def directives(profile: dict[str, Any], inputs: ScriptInputs) -> list[str]:
    """Every #SBATCH line of the run, in a fixed order (golden files compare them)."""
    res, slurm = profile.get("resources") or {}, profile.get("slurm") or {}
    lines = [directive("--job-name", inputs.run_id, "run id")]
    for key in ("partition", "account", "qos", "time", "constraint"):
        if slurm.get(key) not in (None, ""):
            lines.append(directive(f"--{key}", slurm[key], f"slurm.{key}"))
    lines.append(directive("--nodes", int(res.get("nodes") or 1)))
    lines.append(directive("--ntasks-per-node", ranks_per_node(res)))
    if int(res.get("gpus_per_node") or 0):
        lines.append(directive("--gpus-per-node", int(res["gpus_per_node"])))
    lines.append(directive("--cpus-per-task", int(res.get("cpus_per_task") or 1)))
    if res.get("mem_gb"):
        lines.append(directive("--mem", mem_value(float(res["mem_gb"]))))
    if slurm.get("exclusive"):
        lines.append(directive("--exclusive"))
    # USR2 reaches the job steps (the ranks), not this shell: they save together, the driver requeues.
    lines.append(directive("--signal", f"USR2@{int(slurm.get('signal_grace_s') or 120)}"))
    lines.append(directive("--requeue"))
    lines.append(directive("--open-mode", "append"))
    lines.append(directive("--output", BATCH_LOG))
    if inputs.dependency:
        lines.append(directive("--dependency", inputs.dependency))
        # A dependency that can never be met (stage N failed) cancels this job instead of leaving it
        # PENDING forever; the driver of stage N also marks this run cancelled.
        lines.append(directive("--kill-on-invalid-dep", "yes"))
    lines += [extra_directive(item, i) for i, item in enumerate(slurm.get("extra_sbatch") or [])]
    return lines


def python_for(profile: dict[str, Any]) -> str:
    """The interpreter the job runs: ``slurm.python``, else the one running `unigen submit` (as submitit
    does: the same venv on a shared filesystem)."""
    return (profile.get("slurm") or {}).get("python") or sys.executable


def render_script(profile: dict[str, Any], inputs: ScriptInputs) -> str:
    """The whole sbatch script of one run."""
    slurm = profile.get("slurm") or {}
    head = [
        "#!/bin/bash",
        f"# unigen run {comment(inputs.run_id)}: stage {inputs.stage} of {inputs.stages} ({comment(inputs.stage_name)})"
        + (f", recipe {comment(inputs.recipe_path)}" if inputs.recipe_path else ""),
        f"# profile {comment(str(profile.get('name')))}; run folder {comment(inputs.run_dir)}",
        "# Written by `unigen submit`, submitted from the run's logs/ folder (batch log: logs/slurm-<job id>.out).",
        "# SLURM runs this same script again after every requeue; the driver records each attempt in run.json.",
    ]
    body = ["", "# setup (profile slurm.setup)"]
    body += list(slurm.get("setup") or []) or ["# (none)"]
    env = profile.get("env") or {}
    if env:
        body += ["", "# environment (profile env)"]
        for key in sorted(env):
            if not _ENV_NAME.match(key):
                raise UserError(f"env.{key}: not a valid environment variable name (letters, digits, _)")
            body.append(f"export {key}={shlex.quote(str(env[key]))}")
    body += [
        "",
        "# relative recipe and data paths resolve from where `unigen submit` ran",
        f"cd {shlex.quote(inputs.workdir)} || exit 2",
        f"exec {shlex.quote(python_for(profile))} -m {JOB_MODULE} {shlex.quote(inputs.run_dir)}",
        "",
    ]
    return "\n".join(head + directives(profile, inputs) + body)
