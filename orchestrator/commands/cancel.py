"""``unigen cancel RUN``: ask a run to save a checkpoint and stop (status ``cancelled``).

The launcher delivers the request (the local supervisor forwards SIGTERM, SLURM and Ray stop their
jobs after the ranks saved); a run that is already over is left as it is.
"""
from __future__ import annotations

import argparse

from unigen.orchestrator.commands.runref import ledger_arg
from unigen.orchestrator.runs import TERMINAL


def run(args: argparse.Namespace) -> int:
    from unigen.orchestrator.launchers import launcher_of

    ledger = ledger_arg(args)
    record = ledger.read()
    if record["status"] in TERMINAL:
        print(f"{record['run_id']} is {record['status']}: nothing to cancel")
        return 0
    ledger.request_cancel()
    print(launcher_of(record).cancel(ledger))
    return 0
