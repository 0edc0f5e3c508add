"""The loading side (runs in DataLoader workers): work item -> conversation, with deterministic
replacement of bad records. Outcomes travel back as events so the main process counts them."""
from __future__ import annotations

import random

from unigen.model.data.errors import BadRecord
from unigen.model.data.mixture import Mixture, WorkItem
from unigen.model.data.permute import hash_ints
from unigen.model.data.tasks.base import SampleContext

MAX_ATTEMPTS = 16  # consecutive bad records before a source is declared unreadable
# Errors that third-party decoders (PIL, pyarrow, numpy) raise for malformed content: one record's
# problem, not a bug of ours. Anything else propagates with its traceback.
RECORD_ERRORS = (BadRecord, ValueError, TypeError, KeyError, IndexError, AttributeError, OSError,
                 EOFError, SyntaxError, ZeroDivisionError)


class SampleLoader:
    def __init__(self, sources: list, mixture: Mixture, seed: int, image_size: int):
        self.sources = sources
        self.mixture = mixture
        self.seed = seed
        self.image_size = image_size

    def load(self, item: WorkItem) -> tuple[list | None, list[tuple]]:
        """(conversation, events); events: ("ok", s) / ("bad", s, key, reason) / ("fatal", s, msg)."""
        src = self.sources[item.source]
        events: list[tuple] = []
        record = item.record
        for attempt in range(MAX_ATTEMPTS):
            if attempt:
                record = self.mixture.replacement(item.source, item.g, attempt)
            key = src.reader.key(record)
            try:
                conversation = self._convert(src, record, key, item.g, attempt)
            except RECORD_ERRORS as exc:
                reason = exc.reason if isinstance(exc, BadRecord) else f"{type(exc).__name__}: {exc}"
                events.append(("bad", item.source, key, reason))
                continue
            events.append(("ok", item.source))
            return conversation, events
        last = events[-1]
        events.append(("fatal", item.source,
                       f"source {src.name}: {MAX_ATTEMPTS} records in a row are bad (last: {last[2]}: "
                       f"{last[3]}); check data.sources[{item.source}] (uri, format, fields)"))
        return None, events

    def _convert(self, src, record: int, key: str, g: int, attempt: int) -> list:
        raw = src.reader.read(record)
        resolve = raw.pop("__resolve__", None)
        ctx = SampleContext(key=key, rng=random.Random(hash_ints(self.seed, g, attempt)),
                            image_size=self.image_size, resolve=resolve)
        conversation = src.adapter.convert(raw, ctx)
        if src.latents is not None:
            src.latents.attach(key, conversation)
        return conversation


class WorkDataset:
    """Map-style dataset whose "indices" are WorkItems (the batch sampler plans them)."""

    def __init__(self, loader: SampleLoader):
        self.loader = loader

    def __getitem__(self, item: WorkItem):
        return self.loader.load(item)

    def __len__(self) -> int:  # the sequence is endless; DataLoader only needs the method to exist
        return 2**62


class CollateWithEvents:
    """Wraps the runtime's collate: one step's loaded samples -> (its micro-batches, each
    ``collate(conversations)`` of ``micro_batch_size`` samples in order, events), or (None, events) when a
    source failed fatally (the main process raises then)."""

    def __init__(self, collate, micro_batch_size: int):
        self.collate = collate
        self.micro_batch_size = micro_batch_size

    def __call__(self, loaded: list):
        events = [e for _, evs in loaded for e in evs]
        if any(e[0] == "fatal" for e in events):
            return None, events
        conversations = [conv for conv, _ in loaded]
        size = self.micro_batch_size
        batches = [self.collate(conversations[k:k + size]) for k in range(0, len(conversations), size)]
        from torch.utils.data import get_worker_info
        if get_worker_info() is not None:  # in a worker process: one shared buffer for the whole step,
            from unigen.model.data.transfer import pack_lazily  # filled as the queue sends it
            batches = pack_lazily(batches)
        return batches, events


def ignore_stop_signals(_worker_id: int) -> None:
    """``worker_init_fn`` of the training DataLoader: stop signals are the main process's business.

    SLURM (and the launchers) signal every process of a rank's group; a worker killed by SIGTERM makes
    the DataLoader raise in the main process in the middle of a step, instead of letting it finish the
    step, save a checkpoint with its peers and exit for requeue. Workers still exit when the main
    process does (torch's worker watchdog), and SIGKILL still kills them.
    """
    import signal

    for sig in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
