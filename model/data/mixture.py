"""The deterministic, resumable sample order of a weighted mixture.

Global sample index g (0, 1, 2, ... over the whole run, all ranks together) -> one work item:
- source s = weighted choice by ``uniform(seed, g)`` (a pure function of seed and g);
- cursor c = how many earlier global indices chose s (a per-source counter, kept in the state);
- record = Permutation(len(s), key(seed, s, epoch))(c mod len(s)), epoch = c // len(s): every
  record once per epoch, a fresh order each epoch.
The state after any prefix of the sequence is (g, cursors), so saving it and planning on continues the
exact sequence, whatever the number of ranks: ranks only choose which slice of a step they load.
A bad record is replaced by ``replacement(s, g, attempt)``, also a pure function, so replacements are
the same on a rerun (as long as the same records are bad).
"""
from __future__ import annotations

import bisect
import logging
from collections import OrderedDict
from dataclasses import dataclass, field

from unigen.model.data.errors import DataError
from unigen.model.data.permute import Permutation, hash_ints, name_key, uniform

log = logging.getLogger("unigen.data")
STATE_VERSION = 1


@dataclass(frozen=True)
class WorkItem:
    """One sample to load: global index, source index, source cursor, record index in the source."""
    g: int
    source: int
    cursor: int
    record: int


@dataclass
class MixtureState:
    global_index: int = 0
    cursors: dict[str, int] = field(default_factory=dict)


class Mixture:
    def __init__(self, names: list[str], weights: list[float], sizes: list[int], seed: int):
        if len(set(names)) != len(names):
            raise DataError(f"data.sources: duplicate source names {names}; set a distinct `name` on each")
        self.names, self.sizes, self.seed = list(names), list(sizes), int(seed)
        total = float(sum(weights))
        self.cumulative = []
        acc = 0.0
        for w in weights:
            acc += w / total
            self.cumulative.append(acc)
        self.cumulative[-1] = 1.0
        self._keys = [name_key(n) for n in names]
        self._perms: OrderedDict = OrderedDict()

    def source_of(self, g: int) -> int:
        return bisect.bisect_right(self.cumulative, uniform(self.seed, 0x5EED, g))

    def record_of(self, s: int, cursor: int) -> int:
        epoch, pos = divmod(cursor, self.sizes[s])
        key = (s, epoch)
        perm = self._perms.get(key)
        if perm is None:
            perm = self._perms[key] = Permutation(self.sizes[s], hash_ints(self.seed, self._keys[s], epoch))
            while len(self._perms) > 64:
                self._perms.popitem(last=False)
        return perm(pos)

    def replacement(self, s: int, g: int, attempt: int) -> int:
        return hash_ints(self.seed, self._keys[s], g, attempt, 0xBAD) % self.sizes[s]

    def plan(self, state: MixtureState, count: int, keep: range | None = None) -> tuple[list[WorkItem], MixtureState]:
        """The next ``count`` work items after ``state`` (only positions in ``keep`` when given: a rank's
        slice; the cursors still advance over all of them), and the state after them."""
        cursors = [state.cursors.get(n, 0) for n in self.names]
        items = []
        for k, g in enumerate(range(state.global_index, state.global_index + count)):
            s = self.source_of(g)
            c = cursors[s]
            if keep is None or k in keep:  # the permutation is the costly part: only for our slice
                items.append(WorkItem(g, s, c, self.record_of(s, c)))
            cursors[s] = c + 1
        return items, MixtureState(state.global_index + count, dict(zip(self.names, cursors)))

    # -- state (JSON, saved in every checkpoint) -------------------------------------------------
    def state_dict(self, state: MixtureState) -> dict:
        return {"version": STATE_VERSION, "seed": self.seed, "global_index": state.global_index,
                "cursors": dict(state.cursors), "sizes": dict(zip(self.names, self.sizes))}

    def load_state(self, saved: dict) -> MixtureState:
        if not isinstance(saved, dict) or saved.get("version") != STATE_VERSION:
            raise DataError(f"data state: unsupported format {saved!r:.120}; it was not written by this "
                            "version of unigen's loader")
        if saved.get("seed") != self.seed:
            raise DataError(f"data state was saved with seed {saved.get('seed')} but this run uses seed "
                            f"{self.seed}; resume with the same train.seed or start a fresh run")
        old_sizes = saved.get("sizes", {})
        changed = [n for n in self.names if n in old_sizes and old_sizes[n] != self.sizes[self.names.index(n)]]
        if changed:
            log.warning("data sources %s changed size since the state was saved: their order from here "
                        "on differs from an uninterrupted run", changed)
        dropped = sorted(set(saved.get("cursors", {})) - set(self.names))
        if dropped:
            log.warning("data state has cursors for sources no longer in the recipe: %s", dropped)
        cursors = {n: int(saved.get("cursors", {}).get(n, 0)) for n in self.names}
        return MixtureState(int(saved["global_index"]), cursors)
