"""The launcher interface, all torch-free."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from unigen.orchestrator.config import Submission
    from unigen.orchestrator.runs import RunLedger


class Launcher(Protocol):
    name: str

    def launch(self, ledgers: list["RunLedger"], sub: "Submission", *, wait: bool) -> int:
        """Start the runs in order (stage N+1 only after stage N completed; their run folders exist, status
        ``queued``); with ``wait``, stay attached until they end. Returns the exit code of submit."""

    def describe(self, sub: "Submission") -> str:
        """What would be submitted, exactly (job scripts, commands), for ``--dry-run``."""

    def cancel(self, ledger: "RunLedger") -> str:
        """Ask the run to save a checkpoint and stop; returns a line saying what was done."""

    def scheduler_state(self, record: dict[str, Any]) -> str | None:
        """The scheduler's word on a run right now (e.g. SLURM's PENDING, RUNNING), or None when it says
        nothing (the local launcher: the state lives in run.json)."""

    def holds(self, record: dict[str, Any]) -> bool:
        """True while the run is queued or running under this launcher (a supervisor, a job): then
        ``unigen resume`` refuses to start a second copy of it."""
