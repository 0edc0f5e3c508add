"""The workers of one attempt on Ray: a placement group with one bundle per rank, one actor per bundle.

Why actors we place ourselves rather than Ray Train's TorchTrainer: the per-rank runtime already
does what Train would add (torch.distributed + DeepSpeed init, committed checkpoints, resume), and it
must run as the same ``python -m unigen.orchestrator.runtime RUN_DIR`` process under every launcher,
with the same exit codes (75 "requeue me", 2 "do not restart"). A rank is a child process of its
actor (``ray.rank.RankProcess``); the driver decides what an exit means (``launchers.attempts``).

Imported only by the driver, inside a Ray job: it imports ray at the top.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

import ray
from ray.exceptions import GetTimeoutError, RayError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from unigen.orchestrator.launchers.attempt_policy import LOST
from unigen.orchestrator.launchers.attempts import RankSlot, WorkerInfo
from unigen.orchestrator.launchers.ray.rank import RankProcess

log = logging.getLogger("unigen.launcher.ray")

CALL_TIMEOUT_S = 60.0  # a quick actor call that takes longer means its node is in trouble
WAIT_LOG_S = 60.0  # how often "still waiting for workers" is logged

def bundles(workers: int, cpus: float, gpus: float) -> list[dict[str, Any]]:
    """The placement group's bundles: one per worker (Ray rejects zero-valued resources)."""
    return [{"CPU": cpus, **({"GPU": gpus} if gpus else {})} for _ in range(workers)]


_RankActor = ray.remote(max_restarts=0, max_task_retries=0)(RankProcess)


class RayGroup:
    """``attempts.RankGroup`` on a Ray cluster."""

    def __init__(self, *, workers: int, cpus_per_worker: float, gpus_per_worker: float, strategy: str = "PACK"):
        self.n = workers
        self.cpus = cpus_per_worker
        self.gpus = gpus_per_worker
        self.strategy = strategy
        self._pg = None
        self._actors: list = []
        self._order: list = []  # the actors in rank order, once started
        self._codes: list[int | None] = []

    def place(self, should_stop: Callable[[], bool]) -> list[WorkerInfo] | None:
        wanted = bundles(self.n, self.cpus, self.gpus)
        self._pg = placement_group(wanted, strategy=self.strategy)
        started = last_log = time.monotonic()
        while True:
            ready, _ = ray.wait([self._pg.ready()], timeout=1.0)
            if ready:
                break
            if should_stop():
                return None
            if time.monotonic() - last_log > WAIT_LOG_S:
                last_log = time.monotonic()
                log.info("waiting %.0f s for %d workers x %s (cluster has %s available)",
                         last_log - started, self.n, wanted[0], ray.available_resources())
        for i in range(self.n):
            strategy = PlacementGroupSchedulingStrategy(self._pg, placement_group_bundle_index=i)
            self._actors.append(_RankActor.options(num_cpus=self.cpus, num_gpus=self.gpus,
                                                   scheduling_strategy=strategy).remote())
        infos = ray.get([a.node_info.remote() for a in self._actors], timeout=600)
        return [WorkerInfo(bundle=i, node_id=info["node_id"], node_ip=info["node_ip"], hostname=info["hostname"],
                           gpu_ids=tuple(info["gpu_ids"])) for i, info in enumerate(infos)]

    def free_port(self) -> int:
        return ray.get(self._actors[0].free_port.remote(), timeout=CALL_TIMEOUT_S)

    def missing_paths(self, paths: list[str]) -> list[str]:
        found = ray.get([a.check_paths.remote(paths) for a in self._actors], timeout=CALL_TIMEOUT_S)
        hosts = ray.get([a.node_info.remote() for a in self._actors], timeout=CALL_TIMEOUT_S)
        return sorted({f"{h['hostname']}: {p}" for h, miss in zip(hosts, found) for p in miss})

    def start(self, slots: Sequence[RankSlot], *, run_dir: str, cwd: str | None, header: str) -> list[dict]:
        # Slots are in rank order; slot.worker.bundle says which actor runs it.
        self._order = [self._actors[slot.worker.bundle] for slot in slots]
        self._codes = [None] * len(slots)
        refs = [actor.start.remote(run_dir=run_dir, rank=slot.rank, env=slot.env, cwd=cwd,
                                   header=f"{header} rank {slot.rank}")
                for actor, slot in zip(self._order, slots)]
        return ray.get(refs, timeout=CALL_TIMEOUT_S)

    def poll(self) -> list[int | None]:
        refs = {rank: actor.poll.remote() for rank, actor in enumerate(self._order) if self._codes[rank] is None}
        for rank, ref in refs.items():
            try:
                self._codes[rank] = ray.get(ref, timeout=CALL_TIMEOUT_S)
            except GetTimeoutError:
                log.warning("rank %d: its worker did not answer for %.0f s", rank, CALL_TIMEOUT_S)
            except RayError as e:  # the actor died (killed, OOM, node lost): so did its rank
                log.warning("rank %d: its Ray worker is gone (%s)", rank, type(e).__name__)
                self._codes[rank] = LOST
        return list(self._codes)

    def signal(self, signum: int) -> None:
        self._each(lambda actor: actor.signal.remote(signum))

    def kill(self) -> None:
        self._each(lambda actor: actor.kill.remote())

    def _each(self, call) -> None:
        refs = [call(actor) for rank, actor in enumerate(self._order) if self._codes[rank] is None]
        for ref in refs:
            try:
                ray.get(ref, timeout=CALL_TIMEOUT_S)
            except RayError:
                pass  # a dead worker: its rank died with it (PR_SET_PDEATHSIG)

    def release(self) -> None:
        if self._actors and any(c is None for c in self._codes):
            self.kill()  # ranks first, so none outlives its actor even for a moment
        for actor in self._actors:
            ray.kill(actor, no_restart=True)
        self._actors = []
        if self._pg is not None:
            remove_placement_group(self._pg)
            self._pg = None
