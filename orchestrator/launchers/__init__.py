"""Launchers: how the ranks of a run get started, watched, requeued and cancelled.

One per ``profile.launcher`` value: ``local``, the ``slurm/`` and ``ray/`` subpackages, each with a
module exposing ``LAUNCHER``, an object with the small interface of ``base.Launcher``. Shared by all
three: ``attempt_policy`` (what an exit code means and what follows) and ``progress`` (--wait); by the
local and Ray launchers: ``attempts`` (the attempt loop over a group of ranks, and the rank layout).
Launchers are imported only when a command needs them: the SLURM one imports submitit only to submit
or cancel, the Ray one imports ray only to talk to a cluster.
"""
from __future__ import annotations

import importlib

from unigen.orchestrator.launchers.base import Launcher

# The launchers' log lines (launcher.log, the SLURM batch log, the Ray driver's and the supervisor's output).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_MODULES = {"local": "unigen.orchestrator.launchers.local", "slurm": "unigen.orchestrator.launchers.slurm.launcher",
            "ray": "unigen.orchestrator.launchers.ray.launcher"}


def get_launcher(name: str) -> Launcher:
    """The launcher for a profile's ``launcher`` value."""
    if name not in _MODULES:
        raise ValueError(f"unknown launcher {name!r}; valid: {', '.join(_MODULES)}")
    return importlib.import_module(_MODULES[name]).LAUNCHER


def launcher_of(record: dict) -> Launcher:
    """The launcher that runs a run (its run.json ``record``; runs recorded before launchers had names: local)."""
    return get_launcher(record.get("launcher") or "local")


__all__ = ["LOG_FORMAT", "Launcher", "get_launcher", "launcher_of"]
