"""Launchers: how the ranks of a run get started, watched, requeued and cancelled.

One module per ``profile.launcher`` value, each exposing ``LAUNCHER``, an object with the small
interface of ``base.Launcher``. Modules are imported only when a command needs them: the SLURM one
imports nothing heavy (it calls sbatch, srun and scontrol), the Ray one imports ray.
"""
from __future__ import annotations

import importlib

from unigen.orchestrator.launchers.base import Launcher

_MODULES = {"local": "unigen.orchestrator.launchers.local", "slurm": "unigen.orchestrator.launchers.slurm",
            "ray": "unigen.orchestrator.launchers.ray"}


def get_launcher(name: str) -> Launcher:
    """The launcher for a profile's ``launcher`` value."""
    if name not in _MODULES:
        raise ValueError(f"unknown launcher {name!r}; valid: {', '.join(_MODULES)}")
    return importlib.import_module(_MODULES[name]).LAUNCHER


__all__ = ["Launcher", "get_launcher"]
