"""Which committed checkpoints to delete: keep the newest ``keep_last``, every ``keep_every``-th step,
and whatever the caller protects (the newest durable one, ones still waiting to upload)."""
from __future__ import annotations

from typing import Iterable


def validate_retention(keep_last: int, keep_every: int | None) -> None:
    if not isinstance(keep_last, int) or keep_last < 1:
        raise ValueError(f"checkpoint.keep_last={keep_last!r}: must be an integer >= 1 (the newest checkpoint "
                         "is what a resume loads)")
    if keep_every is not None and (not isinstance(keep_every, int) or keep_every < 1):
        raise ValueError(f"checkpoint.keep_every={keep_every!r}: must be a positive integer (keep every "
                         "step divisible by it) or null")


def select_for_deletion(steps: Iterable[int], *, keep_last: int, keep_every: int | None = None,
                        protect: Iterable[int] = ()) -> list[int]:
    """The steps to delete, oldest first. Never the newest ``keep_last``, never a multiple of
    ``keep_every``, never a protected step."""
    validate_retention(keep_last, keep_every)
    ordered = sorted(set(steps))
    keep = set(ordered[-keep_last:]) | set(protect)
    if keep_every:
        keep |= {s for s in ordered if s % keep_every == 0}
    return [s for s in ordered if s not in keep]
