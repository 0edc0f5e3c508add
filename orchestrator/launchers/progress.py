"""The ``--wait`` view: one progress bar per stage (step, loss, samples/s, ETA), read from run.json.

Every launcher's waiting loop calls ``tick(ledger)``; the bar follows the ``progress`` block the
rank-0 runtime writes (every ``train.log_every`` steps). Bars go to stderr, so stdout stays clean
for scripts; without a terminal (CI, a log file) tqdm prints a line per update instead of redrawing.
"""
from __future__ import annotations

import sys
import time
from typing import Any

from unigen.orchestrator.runs import RunLedger

MIN_INTERVAL_S = 1.0  # run.json is re-read at most this often per run


class ProgressView:
    def __init__(self) -> None:
        self._bars: dict[str, Any] = {}
        self._last_read: dict[str, float] = {}
        self._shown: dict[str, tuple] = {}

    def __enter__(self) -> "ProgressView":
        return self

    def __exit__(self, *exc: object) -> None:
        for bar in self._bars.values():
            bar.close()

    def tick(self, ledger: RunLedger, *, force: bool = False) -> None:
        key = str(ledger.paths.root)
        now = time.monotonic()
        if not force and now - self._last_read.get(key, 0.0) < MIN_INTERVAL_S:
            return
        self._last_read[key] = now
        try:
            record = ledger.read()
        except ValueError:  # being rewritten this instant: next tick
            return
        progress = record.get("progress") or {}
        if key not in self._bars:
            from tqdm import tqdm

            self._bars[key] = tqdm(total=progress.get("max_steps") or None, desc=record["run_id"], unit="step",
                                   file=sys.stderr, dynamic_ncols=True, position=len(self._bars))
        bar = self._bars[key]
        step = int(progress.get("step") or 0)
        if step != bar.n:
            bar.n = step  # a resumed attempt may restart below the last reading: set, do not add
        postfix = {"status": record.get("status")}
        if progress.get("loss") is not None:
            postfix["loss"] = f"{progress['loss']:.4f}"
        if progress.get("samples_per_s"):
            postfix["samples/s"] = f"{progress['samples_per_s']:.1f}"
        attempts = len(record.get("attempts") or [])
        if attempts > 1:
            postfix["attempt"] = attempts
        if self._shown.get(key) != (step, postfix):  # without a terminal every refresh is a new line
            self._shown[key] = (step, dict(postfix))
            bar.set_postfix(postfix, refresh=False)
            bar.refresh()

    def write(self, line: str) -> None:
        """Print a line above the bars."""
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)


def print_outcome(ledgers: list[RunLedger]) -> int:
    """What each run came to once ``--wait`` ends: its status, export or error, and the figures of its
    last evaluation suites (each beside its trivial baseline); 0 when every run completed."""
    from unigen.orchestrator.runtime.suite_results import suite_lines

    statuses = []
    for ledger in ledgers:
        record = ledger.read()
        statuses.append(record["status"])
        line = f"{record['run_id']}: {record['status']}"
        if record.get("export"):
            line += f", model exported to {ledger.paths.resolve(record['export']['path'])}"
        if record.get("error") and record["status"] != "completed":
            line += f" ({record['error']})"
        print(line)
        evaluation = record.get("eval") or {}
        for suite in suite_lines(evaluation.get("suites")):
            print(f"  eval step {evaluation.get('step')}: {suite}")
    return 0 if all(s == "completed" for s in statuses) else 1
