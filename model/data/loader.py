"""``build_loader``: the training runtime's view of the data package.

Each optimizer step consumes global sample indices [t*G, (t+1)*G) (G = global batch size), planned by
``Mixture`` from the seed alone. Rank r loads its contiguous slice of G / world_size of them, as
``accumulation`` micro-batches, through a DataLoader (workers + prefetch; a worker loads and collates a
whole step, then hands it over in one message). The state returned by
``state_dict()`` is the plan's position after the last step *returned* (kept in the main process, never
read from how far workers have prefetched), so restoring it continues the exact sequence, and because
a step's sample set does not depend on the world size, 2 ranks -> 1 rank continues with nothing
repeated or skipped.
"""
from __future__ import annotations

import atexit
import logging
import weakref
from collections import deque
from typing import Any, Callable

from unigen.model.data.batching import accumulation_steps
from unigen.model.data.errors import DataError
from unigen.model.data.mixture import Mixture, MixtureState
from unigen.model.data.sources import open_sources
from unigen.model.data.transfer import unpack
from unigen.model.data.worker import CollateWithEvents, SampleLoader, WorkDataset, ignore_stop_signals

log = logging.getLogger("unigen.data")
LAST_BAD_KEPT = 5
# Workers start from a fork server, not by forking the rank. A rank has threads (gloo, the checkpoint
# uploader, background deletions, the tracking sender); CPython 3.11 can deadlock a forked child in
# PyOS_AfterFork_Child when another thread held the interpreter's thread-state lock at the fork, and then
# the rank waits for its first batch forever while the others time out in their first collective (twice
# in one day of end-to-end tests, a resumed attempt each time; gdb showed the worker stuck in
# _PyThreadState_DeleteExcept). The fork server is a clean single-threaded process; each
# worker gets the dataset and collate pickled, once per attempt (persistent workers).
WORKER_START = "forkserver"


def build_loader(spec, collate: Callable[[list], Any], *, seed: int, global_batch_size: int,
                 micro_batch_size: int, rank: int, world_size: int, state: dict | None = None) -> "Loader":
    """A loader for this rank; ``state`` (from ``Loader.state_dict()``) continues a previous run."""
    return Loader(spec, collate, seed=seed, global_batch_size=global_batch_size,
                  micro_batch_size=micro_batch_size, rank=rank, world_size=world_size, state=state)


class _StepSampler:
    """Batch sampler: yields this rank's WorkItems of one optimizer step at a time, and records the mixture
    state after each planned step for the loader to adopt when it hands that step out. A whole step is one
    DataLoader "batch" (split into micro-batches by the collate), so a worker hands the main process one
    message per step rather than one per micro-batch: each hand-over costs a process wake-up, which on
    busy shared cores is milliseconds."""

    def __init__(self, loader: "Loader"):
        self.loader = loader

    def __iter__(self):
        lo = self.loader
        state = lo._state
        per_rank = lo.global_batch_size // lo.world_size
        mine_range = range(lo.rank * per_rank, (lo.rank + 1) * per_rank)
        while True:
            mine, state = lo.mixture.plan(state, lo.global_batch_size, keep=mine_range)
            lo._planned.append(state)
            yield mine


class Loader:
    def __init__(self, spec, collate, *, seed, global_batch_size, micro_batch_size, rank, world_size, state):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.spec = spec
        self.accumulation = accumulation_steps(global_batch_size, micro_batch_size, world_size)
        self.global_batch_size, self.micro_batch_size = global_batch_size, micro_batch_size
        self.rank, self.world_size, self.seed = rank, world_size, int(seed)
        self.sources = open_sources(spec)
        self.mixture = Mixture([s.name for s in self.sources], [s.spec.weight for s in self.sources],
                               [len(s) for s in self.sources], self.seed)
        self._state = self.mixture.load_state(state) if state else MixtureState()
        self._planned: deque = deque()
        self._counts = {s.name: {"served": 0, "bad": 0, "last_bad": []} for s in self.sources}
        self._steps = 0
        self._iter = None
        self._dataloader = self._make_dataloader(collate)
        log.info("data: %d sources (%s), %d records/sessions; rank %d of %d, %d micro-batches of %d per step",
                 len(self.sources), ", ".join(f"{s.name}={len(s)}" for s in self.sources),
                 sum(len(s) for s in self.sources), rank, world_size, self.accumulation, micro_batch_size)

    def _make_dataloader(self, collate):
        from torch.utils.data import DataLoader
        workers = self.spec.num_workers
        extra = {"prefetch_factor": self.spec.prefetch_factor, "persistent_workers": True,
                 "worker_init_fn": ignore_stop_signals, "multiprocessing_context": WORKER_START} if workers else {}
        dataset = WorkDataset(SampleLoader(self.sources, self.mixture, self.seed, self.spec.image_size))
        return DataLoader(dataset, batch_sampler=_StepSampler(self), num_workers=workers,
                          collate_fn=CollateWithEvents(collate, self.micro_batch_size), **extra)

    # -- the runtime's API -----------------------------------------------------------------------
    def next_step(self) -> list:
        """This rank's micro-batches for one optimizer step (``accumulation`` of them)."""
        if self._iter is None:
            self._iter = iter(self._dataloader)
            if self.spec.num_workers:
                # Registered after the workers started, so it runs BEFORE multiprocessing's own exit hook
                # (atexit is last-in first-out): the workers ignore SIGTERM (worker.ignore_stop_signals), so
                # that hook's terminate() cannot stop them and its join() would wait forever.
                atexit.register(_close_at_exit, weakref.ref(self))
        batches, events = next(self._iter)
        self._account(events)
        batches = unpack(batches)
        self._state = self._planned.popleft()
        self._steps += 1
        if self._steps % self.spec.log_every == 0:
            log.info("data counts after %d steps: %s", self._steps,
                     ", ".join(f"{n}: {c['served']} served / {c['bad']} bad" for n, c in self._counts.items()))
        return batches

    def state_dict(self) -> dict:
        """JSON-serialisable position after the last step returned by ``next_step``."""
        return self.mixture.state_dict(self._state)

    def stats(self) -> dict:
        """Per-source samples served and bad records (with the keys of the last few bad), this rank."""
        sources = {n: {"served": c["served"], "bad": c["bad"], "last_bad": list(c["last_bad"])}
                   for n, c in self._counts.items()}
        return {"steps": self._steps, "global_index": self._state.global_index, "sources": sources,
                "served": sum(c["served"] for c in sources.values()),
                "bad": sum(c["bad"] for c in sources.values())}

    def close(self) -> None:
        """Stop the worker processes now: they are told to finish and joined (also at interpreter exit, and
        when the loader is garbage collected)."""
        it, self._iter = self._iter, None
        shutdown = getattr(it, "_shutdown_workers", None)  # torch's multi-process iterator
        if shutdown is not None:
            shutdown()
        self._dataloader = None

    # -- internals -------------------------------------------------------------------------------
    def _account(self, events: list) -> None:
        for event in events:
            name = self.sources[event[1]].name
            counts = self._counts[name]
            if event[0] == "ok":
                counts["served"] += 1
            elif event[0] == "bad":
                counts["bad"] += 1
                counts["last_bad"] = (counts["last_bad"] + [{"key": event[2], "reason": event[3]}])[-LAST_BAD_KEPT:]
                log.warning("data: bad record in source %s, key %s: %s", name, event[2], event[3])
            elif event[0] == "fatal":
                raise DataError(event[2])
        self._check_bad_fraction()

    def _check_bad_fraction(self) -> None:
        limit = self.spec.max_bad_fraction
        for name, c in self._counts.items():
            seen = c["served"] + c["bad"]
            if seen >= self.spec.bad_fraction_min_records and c["bad"] > limit * seen:
                keys = ", ".join(f"{b['key']} ({b['reason']})" for b in c["last_bad"][-3:])
                raise DataError(f"source {name}: {c['bad']} of {seen} records are bad ({c['bad'] / seen:.1%} > "
                                f"data.max_bad_fraction {limit:.1%}); last bad: {keys}. Fix or drop the "
                                "source, or raise data.max_bad_fraction")


def _close_at_exit(ref: "weakref.ReferenceType[Loader]") -> None:
    loader = ref()
    if loader is not None:
        loader.close()
