"""``unigen export RUN --out DIR``: the run's newest verified checkpoint (ZeRO-3 shards) -> a
``UniGenPipeline.from_pretrained`` folder, recorded on the run (run.json ``export``, MLflow tag)."""
from __future__ import annotations

import argparse
from pathlib import Path

from unigen.orchestrator.commands.runref import ledger_arg, newest_local_checkpoint
from unigen.orchestrator.errors import UserError


def run(args: argparse.Namespace) -> int:
    from unigen.orchestrator.config.recorded import recorded_recipe
    from unigen.orchestrator.runtime.export import export_checkpoint
    from unigen.orchestrator.tracking import record_export

    ledger = ledger_arg(args)
    record = ledger.read()
    out = Path(args.out).expanduser().resolve()
    if out.exists() and any(out.iterdir()) and not (out / "unigen_export.json").is_file():
        raise UserError(f"--out {out} exists and is not an earlier unigen export: pick an empty or new folder")
    step_dir = newest_local_checkpoint(ledger)
    export_checkpoint(recorded_recipe(record), step_dir, out, run_id=record["run_id"], average=not args.last_weights)

    def change(r):
        r["export"] = {"path": ledger.paths.record_path(out), "step": int(step_dir.name.split("-")[-1])}

    ledger.update(change)
    left = record_export(ledger, out)
    note = "" if not left else " (MLflow did not answer: the export tag waits in the run's spool)"
    print(f"exported {record['run_id']} {step_dir.name} -> {out}{note}")
    return 0
