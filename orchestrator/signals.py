"""Preemption: signal handlers that only raise a flag, and a collective check of that flag.

SLURM sends SIGUSR2 (``--signal=USR2@grace``) before it preempts or times out a job, and everyone
sends SIGTERM. A DeepSpeed ZeRO-3 checkpoint must be written by ALL ranks together, and the signal
usually reaches only some of them (submitit even calls its ``checkpoint()`` on global rank 0 only,
inside the handler, where a ZeRO-3 save hangs). So the handler does nothing but set a flag; at each
step boundary the training loop calls :meth:`PreemptionFlag.should_stop`, which all-reduces the flag so every rank
takes the same branch: save a committed checkpoint together, then exit with ``exitcodes.EXIT_REQUEUE`` (75).

A second (third, ...) signal while that save runs only sets the flag again: the handler never
raises, never logs (a handler can interrupt the logging module while it holds its lock) and never
calls back into the interrupted code, so the save finishes and stays intact.

Installing replaces the previous handlers of those signals (submitit's included, on purpose: its
handler is the rank-0-only save described above); :meth:`PreemptionFlag.uninstall` restores them.
"""
from __future__ import annotations

import signal
import threading
from typing import Iterable

from unigen.orchestrator.comm import Comm

DEFAULT_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGUSR2, signal.SIGTERM)


class PreemptionFlag:
    """A flag raised by preemption signals. Handlers only set attributes, nothing else."""

    def __init__(self) -> None:
        self._signum: int | None = None
        self._count = 0
        self._previous: dict[int, object] = {}

    # -- handlers ---------------------------------------------------------------------------------
    def install(self, signals: Iterable[int] = DEFAULT_SIGNALS) -> "PreemptionFlag":
        """Route ``signals`` to this flag (main thread only, as Python requires). Returns self."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("signal handlers can only be installed from the main thread")
        for sig in signals:
            sig = signal.Signals(sig)
            self._previous.setdefault(sig, signal.getsignal(sig))
            signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        # Keep this to plain attribute writes: it may run in the middle of a save, or of anything.
        if self._signum is None:
            self._signum = signum
        self._count += 1

    # -- state ------------------------------------------------------------------------------------
    @property
    def requested(self) -> bool:
        """True once a signal arrived on THIS rank."""
        return self._count > 0

    @property
    def count(self) -> int:
        """How many signals arrived (a second one during a save is counted, nothing more)."""
        return self._count

    @property
    def reason(self) -> str | None:
        """The first signal's name (``SIGTERM``, ``SIGUSR2``), or None."""
        return signal.Signals(self._signum).name if self._signum is not None else None

    def should_stop(self, comm: Comm) -> bool:
        """Collective: True on every rank when any rank got a signal. Call at a step boundary on all
        ranks, then (when True) save a checkpoint together and ``sys.exit(EXIT_REQUEUE)``."""
        return comm.all_reduce_any(self.requested)


_default = PreemptionFlag()


def install_handlers(signals: Iterable[int] = DEFAULT_SIGNALS) -> PreemptionFlag:
    """Install the flag-only handlers for SIGUSR2 and SIGTERM on the process-wide flag."""
    return _default.install(signals)
