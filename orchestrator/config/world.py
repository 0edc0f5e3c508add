"""How many ranks a profile runs (the world size), and why: the denominator of gradient accumulation.

- local: one rank per visible GPU (CUDA_VISIBLE_DEVICES, else ``nvidia-smi -L``) unless
  ``local.backend`` is gloo or no GPU is visible; then ``local.cpu_ranks``.
- slurm: ``resources.nodes x ranks_per_node`` (ranks_per_node defaults to gpus_per_node).
- ray: ``ray.workers``.

``batch_problem`` is the global-batch rule against that world size (global = micro x accumulation x world).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from unigen.orchestrator.config.profile import Profile
from unigen.orchestrator.config.recipe import TrainSection
from unigen.orchestrator.config.salvage import Salvaged
from unigen.orchestrator.config.yamlload import Locations
from unigen.orchestrator.errors import Problem


@dataclass(frozen=True)
class World:
    """The world size of a profile on this machine, how it was derived, and whether ranks use GPUs."""

    size: int
    gpus: bool
    why: str


def visible_gpus() -> int:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else what ``nvidia-smi -L`` lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() not in ("", "-1")])
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def world_of(profile: Profile, gpu_count: int | None = None) -> World:
    """The world size of ``profile``; ``gpu_count`` replaces GPU detection (tests, previews)."""
    if profile.launcher == "local":
        local = profile.local
        gpus = visible_gpus() if gpu_count is None else gpu_count
        if local.backend == "gloo":
            return World(local.cpu_ranks, False, f"local.cpu_ranks={local.cpu_ranks} (local.backend=gloo)")
        if gpus:
            return World(gpus, True, f"one rank per visible GPU ({gpus})")
        return World(local.cpu_ranks, False, f"local.cpu_ranks={local.cpu_ranks} (no GPU visible)")
    if profile.launcher == "slurm":
        res = profile.resources
        what = "gpus_per_node" if res.ranks_per_node is None else "ranks_per_node"
        return World(res.nodes * res.node_ranks, res.gpus_per_node > 0,
                     f"resources.nodes={res.nodes} x {what}={res.node_ranks}")
    ray = profile.ray
    return World(ray.workers, ray.gpus_per_worker > 0, f"ray.workers={ray.workers}")


_WORLD_FIELDS = {"local": (("local", "backend"), ("local", "cpu_ranks")),
                 "slurm": (("resources", "nodes"), ("resources", "gpus_per_node"), ("resources", "ranks_per_node")),
                 "ray": (("ray", "workers"), ("ray", "gpus_per_worker"))}


def readable_world(part: Salvaged[Profile], gpu_count: int | None) -> World | None:
    """The world size when the fields world.py derives it from are not in doubt."""
    if not part.readable(("launcher",)):
        return None
    launcher = part.value.launcher
    if not part.readable(*_WORLD_FIELDS[launcher]) or (launcher != "slurm" and getattr(part.value, launcher) is None):
        return None
    world = world_of(part.value, gpu_count)
    return world if world.size > 0 else None


def batch_problem(train: TrainSection, world: World, locs: Locations) -> tuple[int, Problem | None]:
    """(gradient accumulation, the problem when the global batch does not split over the world): the
    global-batch rule (unigen.model.data.batching) as ``unigen validate`` and ``unigen submit`` report it."""
    from unigen.model.data.batching import split_problem

    problem = split_problem(train.global_batch_size, train.micro_batch_size, world.size, world.why)
    if problem is None:
        return train.global_batch_size // (train.micro_batch_size * world.size), None
    return 0, locs.problem(("train", "global_batch_size"), problem)
