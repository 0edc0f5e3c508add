"""``unigen resume RUN [--plan] [--wait]``: restart a stopped run from its newest verified checkpoint.

``--plan`` only reads: which checkpoint would load, from where (local or the remote mirror), and why
each newer one would not (no COMMIT, a size or sha256 mismatch, ...). Without it the run is handed
back to its launcher, which starts a new attempt; the runtime itself picks and verifies the
checkpoint exactly as the plan describes.
"""
from __future__ import annotations

import argparse
import sys

from unigen.orchestrator.commands.runref import checkpoint_manager, ledger_arg
from unigen.orchestrator.errors import UserError


def run(args: argparse.Namespace) -> int:
    from unigen.orchestrator.launchers import launcher_of
    from unigen.orchestrator.submission import submission_from_record

    ledger = ledger_arg(args)
    if args.plan:
        plan = checkpoint_manager(ledger).plan_resume(strict=False)
        print(plan.describe())
        return 2 if plan.error else 0
    record = ledger.read()
    if record["status"] == "completed":
        raise UserError(f"run {record['run_id']} already completed; to train further submit a new run with "
                        f"init_from=run:{record['run_id']}")
    launcher = launcher_of(record)
    if launcher.holds(record):
        raise UserError(f"run {record['run_id']} is {record['status']} and its launcher still has it: "
                        f"`unigen cancel {record['run_id']}` first, or wait for it")
    plan = checkpoint_manager(ledger).plan_resume(strict=False)
    if plan.error:
        raise UserError(f"run {record['run_id']} cannot resume: {plan.error} "
                        f"(`unigen resume {record['run_id']} --plan` lists every checkpoint)")
    where = f"step-{plan.chosen.step} ({plan.chosen.source})" if plan.chosen else "step 0 (no checkpoint yet)"
    print(f"resuming {record['run_id']} from {where}", file=sys.stderr)
    sub = submission_from_record(ledger)

    def change(r):
        r["status"] = "queued"
        r["error"] = None
        r.pop("cancel_requested", None)

    ledger.update(change)
    return launcher.launch([ledger], sub, wait=args.wait)
