"""``unigen runs [--experiment E] [--stage S] [--status S] [--run-root DIR] [--sync]``.

Prints one row per run under the run root: run, stage, status, step, last loss, last held-out val_loss and
the latest evaluation suite figure (t2i's overall score, else the first suite's primary metric;
runbooks/evaluation.md), durable checkpoint, MLflow run id. Data comes from the runs' run.json files; the
last loss and val_loss are taken from MLflow when it answers within a few seconds. ``--sync`` instead sends every run's spooled tracking calls (left by
attempts that ran while MLflow was down) and reports what was sent.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from unigen.orchestrator.runs import default_run_root

HEADERS = ("RUN", "STAGE", "STATUS", "STEP", "LOSS", "VAL LOSS", "EVAL", "DURABLE CHECKPOINT", "MLFLOW RUN")


def run_root_arg(args: argparse.Namespace) -> Path:
    """``--run-root`` if given, else $UNIGEN_RUN_ROOT, else ./unigen-runs."""
    value = getattr(args, "run_root", None)
    return Path(value).resolve() if value else default_run_root()


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = []
    for cells in (headers, *rows):
        padded = [str(c).ljust(w) for c, w in zip(cells[:-1], widths[:-1])] + [str(cells[-1])]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from unigen.orchestrator.tracking.browse import collect_rows

    root = run_root_arg(args)
    filters = {"experiment": getattr(args, "experiment", None), "stage": getattr(args, "stage", None),
               "status": getattr(args, "status", None)}
    if getattr(args, "sync", False):
        return _sync(root, filters)
    rows, notes = collect_rows(root, **filters)
    if not rows:
        wanted = ", ".join(f"{k}={v}" for k, v in filters.items() if v)
        print(f"no runs under {root}" + (f" matching {wanted}" if wanted else ""))
        return 0
    table = [(r.run, r.stage, r.status, r.step, r.loss, r.val_loss, r.suite, r.durable, r.mlflow) for r in rows]
    print(render_table(HEADERS, table))
    for note in notes:
        print(f"note: {note}")
    return 0


def _sync(root: Path, filters: dict) -> int:
    from unigen.orchestrator.tracking.browse import collect_rows
    from unigen.orchestrator.tracking.sync import sync_run

    rows, _ = collect_rows(root, query_mlflow=False, **filters)
    waiting = [r for r in rows if r.spooled]
    if not waiting:
        print(f"nothing to sync under {root}: no run has spooled tracking calls")
        return 0
    failed = 0
    for row in waiting:
        result = sync_run(row.run_dir)
        line = f"{result.run_id}: sent {result.sent}, dropped {result.dropped}, left {result.left}"
        if result.error:
            line += f" (stopped: {result.error})"
        print(line)
        failed += bool(result.left)
    return 1 if failed else 0
