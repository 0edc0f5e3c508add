"""``unigen logs RUN [--rank R] [--follow]``: a run's logs, the same for every launcher.

Without --rank: the launcher's log, then rank 0's. With --follow, new lines are printed as they come
until the run reaches a terminal status (completed, failed, cancelled).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from unigen.orchestrator.commands.runref import ledger_arg
from unigen.orchestrator.errors import UserError
from unigen.orchestrator.runs import TERMINAL, RunLedger

POLL_S = 0.5


def _files(ledger: RunLedger, rank: int | None) -> list[Path]:
    logs = ledger.paths.logs
    if rank is not None:
        path = ledger.paths.rank_log(rank)
        if not path.exists():
            have = sorted(p.name for p in logs.glob("rank-*.log"))
            raise UserError(f"run {ledger.run_id} has no log for rank {rank} yet ({path}); "
                            f"logs present: {', '.join(have) or 'none'}")
        return [path]
    return [p for p in (logs / "launcher.log", ledger.paths.rank_log(0)) if p.exists()]


def _print_new(path: Path, offsets: dict[Path, int], *, label: bool) -> None:
    try:
        with open(path, "rb") as fh:
            fh.seek(offsets.get(path, 0))
            data = fh.read()
            offsets[path] = fh.tell()
    except FileNotFoundError:
        return
    if not data:
        return
    text = data.decode("utf-8", errors="replace")
    if label:
        text = "".join(f"[{path.stem}] {line}" for line in text.splitlines(keepends=True))
    sys.stdout.write(text)
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    ledger = ledger_arg(args)
    rank = getattr(args, "rank", None)
    offsets: dict[Path, int] = {}
    files = _files(ledger, rank)
    if not files and not args.follow:
        print(f"run {ledger.run_id} has no logs yet ({ledger.paths.logs})", file=sys.stderr)
        return 0
    label = len(files) > 1 or (rank is None and args.follow)
    for path in files:
        _print_new(path, offsets, label=label)
    while args.follow:
        status = ledger.read()["status"]
        for path in _files(ledger, rank) if rank is None else files:
            _print_new(path, offsets, label=label)
        if status in TERMINAL:
            break
        time.sleep(POLL_S)
    return 0
