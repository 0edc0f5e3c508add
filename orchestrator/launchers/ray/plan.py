"""Pure decisions of the Ray launcher, kept free of Ray so unit tests run them without a cluster.

- ``rank_layout``: which placed worker becomes which rank, its LOCAL_RANK, the rendezvous address,
  and what each rank may see of the GPUs;
- ``bundles``: the placement group's resources.
What the exit codes of an attempt mean is ``attempt_policy`` (shared with the local and SLURM launchers).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from unigen.orchestrator.launchers.attempt_policy import LOST  # noqa: F401 - group's poll() sentinel


@dataclass(frozen=True)
class WorkerInfo:
    """Where one placed worker (a Ray actor in bundle ``bundle``) landed."""

    bundle: int
    node_id: str
    node_ip: str
    hostname: str
    gpu_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class RankSlot:
    """One rank of an attempt: the worker that runs it and the variables that make it that rank."""

    rank: int
    worker: WorkerInfo
    env: dict[str, str]


def rank_layout(workers: Sequence[WorkerInfo], *, master_port: int, gpus: bool) -> list[RankSlot]:
    """Ranks for the placed workers, grouped by node so that LOCAL_RANK counts 0.. on every node.

    The first worker's node (bundle 0) hosts rank 0 and the rendezvous (MASTER_ADDR, with a port
    that was found free there). Ray gives each GPU worker only its own GPU in CUDA_VISIBLE_DEVICES,
    but the runtime picks ``cuda:LOCAL_RANK``; so, as Ray Train does, every rank on a node sees the
    GPUs of all workers on that node, in local-rank order, and LOCAL_RANK indexes its own.
    """
    if not workers:
        raise ValueError("rank_layout needs at least one worker")
    node_order: dict[str, int] = {}
    for w in sorted(workers, key=lambda w: w.bundle):
        node_order.setdefault(w.node_id, len(node_order))
    ordered = sorted(workers, key=lambda w: (node_order[w.node_id], w.bundle))
    by_node: dict[str, list[WorkerInfo]] = {}
    for w in ordered:
        by_node.setdefault(w.node_id, []).append(w)
    master = ordered[0]
    slots = []
    for rank, w in enumerate(ordered):
        peers = by_node[w.node_id]
        env = {"RANK": str(rank), "WORLD_SIZE": str(len(ordered)), "LOCAL_RANK": str(peers.index(w)),
               "LOCAL_WORLD_SIZE": str(len(peers)), "NODE_RANK": str(node_order[w.node_id]),
               "MASTER_ADDR": master.node_ip, "MASTER_PORT": str(master_port)}
        if gpus:
            missing = [p.bundle for p in peers if not p.gpu_ids]
            if missing:
                raise ValueError(f"workers in bundles {missing} were given no GPU by Ray")
            env["CUDA_VISIBLE_DEVICES"] = ",".join(p.gpu_ids[0] for p in peers)
        else:
            # CPU ranks train over gloo even on a node with GPUs.
            env["CUDA_VISIBLE_DEVICES"] = ""
        slots.append(RankSlot(rank, w, env))
    return slots


def bundles(workers: int, cpus: float, gpus: float) -> list[dict[str, Any]]:
    """The placement group's bundles: one per worker (Ray rejects zero-valued resources)."""
    one: dict[str, Any] = {"CPU": cpus}
    if gpus:
        one["GPU"] = gpus
    return [dict(one) for _ in range(workers)]
