"""The launcher interface: four calls, all torch-free.

``launch`` starts the stages of a submission (their run folders exist, status ``queued``) and with
``wait`` stays attached until they end; ``describe`` is the ``--dry-run`` preview (the exact job
script); ``cancel`` asks a run to save and stop; ``scheduler_state`` is what the scheduler says of a
run right now (None when it says nothing, e.g. the local launcher whose state lives in run.json);
``holds`` says whether the launcher still has the run queued or running (then ``unigen resume``
refuses to start a second copy of it).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from unigen.orchestrator.config import Submission
    from unigen.orchestrator.runs import RunLedger


class Launcher(Protocol):
    name: str

    def launch(self, ledgers: list["RunLedger"], sub: "Submission", *, wait: bool) -> int:
        """Start the runs in order (stage N+1 only after stage N completed); the exit code of submit."""

    def describe(self, sub: "Submission") -> str:
        """What would be submitted, exactly (job scripts, commands), for ``--dry-run``."""

    def cancel(self, ledger: "RunLedger") -> str:
        """Ask the run to save a checkpoint and stop; returns a line saying what was done."""

    def scheduler_state(self, record: dict[str, Any]) -> str | None:
        """The scheduler's word on a run (e.g. SLURM's PENDING, RUNNING), or None."""

    def holds(self, record: dict[str, Any]) -> bool:
        """True while the run is queued or running under this launcher (a supervisor, a job)."""
