"""``heldout_batches``: this rank's share of a fixed held-out set (the recipe's ``eval.sources``).

The set is the first ``samples`` global indices of the held-out sources' mixture, planned from the eval
seed as the training mixture is planned from the training seed: the same samples at every evaluation and
on any number of ranks. It is cut into micro-batches of ``micro_batch_size`` in global order (the last may
be smaller), and micro-batch j goes to rank j mod world_size. Every rank returns the same number of
batches: a rank with fewer real ones gets stand-ins (``real=False``) to run and ignore, because under
ZeRO-3 every rank must run the same forward passes. Loaded once, in this process (no workers), so an
evaluation costs only its forward passes.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable

from unigen.model.data.errors import DataError
from unigen.model.data.mixture import Mixture, MixtureState
from unigen.model.data.sources import open_sources
from unigen.model.data.worker import SampleLoader

log = logging.getLogger("unigen.data")


@dataclass(frozen=True)
class HeldoutBatch:
    """One micro-batch of the held-out set."""

    index: int
    """Global micro-batch index j (its samples are [j * micro, (j + 1) * micro) of the set)."""
    batch: Any
    """``collate(conversations)``."""
    sources: tuple[int, ...]
    """Per sample, the index of its source in ``eval.sources``."""
    real: bool = True
    """False for a stand-in that only keeps this rank's forward passes in step with the other ranks'."""


def heldout_batches(spec, collate: Callable[[list], Any], *, seed: int, samples: int, micro_batch_size: int,
                    rank: int, world_size: int) -> tuple[list[str], list[HeldoutBatch]]:
    """(source names, this rank's micro-batches) of the held-out set of ``spec`` (a DataSpec)."""
    if samples <= 0 or micro_batch_size <= 0 or not 0 <= rank < world_size:
        raise ValueError(f"samples={samples}, micro_batch_size={micro_batch_size}, rank {rank} of {world_size}: "
                         "samples and micro_batch_size must be positive and the rank inside the world")
    sources = open_sources(spec, section="eval.sources")
    names = [s.name for s in sources]
    mixture = Mixture(names, [s.spec.weight for s in sources], [len(s) for s in sources], seed)
    items, _ = mixture.plan(MixtureState(), samples)
    loader = SampleLoader(sources, mixture, seed, spec.image_size)

    def load(j: int, real: bool = True) -> HeldoutBatch:
        chunk = items[j * micro_batch_size:(j + 1) * micro_batch_size]
        conversations = [_load_one(loader, item, names) for item in chunk]
        return HeldoutBatch(j, collate(conversations), tuple(item.source for item in chunk), real)

    count = math.ceil(samples / micro_batch_size)
    mine = [load(j) for j in range(rank, count, world_size)]
    per_rank = math.ceil(count / world_size)
    if len(mine) < per_rank:
        stand_in = mine[0] if mine else load(0, real=False)
        mine += [HeldoutBatch(stand_in.index, stand_in.batch, stand_in.sources, False)] * (per_rank - len(mine))
    return names, mine


def _load_one(loader: SampleLoader, item, names: list[str]) -> list:
    conversation, events = loader.load(item)
    for event in events:
        if event[0] == "bad":
            log.warning("eval data: bad record in source %s, key %s: %s (a fixed replacement is used)",
                        names[event[1]], event[2], event[3])
        elif event[0] == "fatal":
            raise DataError(event[2].replace("data.sources[", "eval.sources["))
    return conversation
