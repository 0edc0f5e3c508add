"""Pure decisions of the Ray launcher, kept free of Ray so unit tests run them without a cluster.

- ``rank_layout``: which placed worker becomes which rank, its LOCAL_RANK, the rendezvous address,
  and what each rank may see of the GPUs;
- ``classify``: what the exit codes of one attempt mean (completed, requeue, fatal, crashed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from unigen.orchestrator.exitcodes import EXIT_FATAL, EXIT_REQUEUE

# poll() of a worker that vanished (its actor or node died): not an exit code a process can return.
LOST = -1000


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


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended. ``reason``: completed | requeue | fatal | crashed."""

    reason: str
    codes: tuple[int, ...]
    detail: str
    exit_code: int = 0  # the code that says why: the first failing rank's (75 for a requeue)

    def __post_init__(self) -> None:
        if self.reason == "requeue" and not self.exit_code:
            object.__setattr__(self, "exit_code", EXIT_REQUEUE)


def describe_code(code: int) -> str:
    if code == LOST:
        return "lost (its Ray worker or node died)"
    if code < 0:
        return f"killed by signal {-code}"
    return f"exited {code}"


def classify(codes: Sequence[int], first_bad: int | None = None) -> Outcome:
    """All 0: completed. Only 0 and 75: every rank saved on a stop signal, restart at once. Any 2: a
    user error a restart cannot fix. Anything else (a crash, a signal, a lost worker): crashed.

    ``first_bad`` is the rank seen failing first: the cause, while its peers usually fail after it
    (a collective whose partner vanished); it comes first in ``detail`` and gives ``exit_code``."""
    codes = tuple(int(c) for c in codes)
    bad = [(r, c) for r, c in enumerate(codes) if c not in (0, EXIT_REQUEUE)]
    bad.sort(key=lambda rc: rc[0] != first_bad)
    detail = "; ".join(f"rank {r} {describe_code(c)}" for r, c in bad[:4])
    if all(c == 0 for c in codes):
        return Outcome("completed", codes, "all ranks exited 0")
    if not bad:
        return Outcome("requeue", codes, f"ranks saved a checkpoint and asked to be restarted (exit {EXIT_REQUEUE})")
    if any(c == EXIT_FATAL for c in codes):
        fatal = [(r, c) for r, c in bad if c == EXIT_FATAL]
        return Outcome("fatal", codes, detail, fatal[0][1])
    return Outcome("crashed", codes, detail, bad[0][1])


def first_failure(codes: Sequence[int | None]) -> int | None:
    """The first rank that ended badly while others may still run (None: none has)."""
    for rank, code in enumerate(codes):
        if code is not None and code not in (0, EXIT_REQUEUE):
            return rank
    return None


def bundles(workers: int, cpus: float, gpus: float) -> list[dict[str, Any]]:
    """The placement group's bundles: one per worker (Ray rejects zero-valued resources)."""
    one: dict[str, Any] = {"CPU": cpus}
    if gpus:
        one["GPU"] = gpus
    return [dict(one) for _ in range(workers)]
