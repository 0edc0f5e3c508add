"""The results of the evaluation suites (``unigen.model.evaluation.suites``) in the forms they leave a run in.
One implementation for training's evaluations (``runtime.evaluation``, ``runtime.reporting``) and
``unigen eval`` (``commands.eval``); ``unigen runs`` and ``unigen status`` read the rows back from run.json.

- a **row** per suite (``suite_rows``): ``SuiteResult.row()`` plus its ``primary`` metric, JSON-safe (a metric
  no case measured, NaN in the result, is ``null``). eval.jsonl lines, run.json's ``eval`` and suites.json
  hold these rows, so readers need neither the model package nor its table of primary metrics.
- **MLflow metrics** (``flat_metrics``): ``eval/<suite>/<metric>`` and ``eval/<suite>/<metric>.baseline``.
- **a step's files** (``write_suite_files``): ``suites.json``, ``suites.md`` (suite | metric | value | baseline)
  and the example pictures under ``suites/``, in the step's folder (``eval/step-<N>/``).
- **run.json's latest evaluation** (``merge_latest_eval``): replaced only by one at least as new.

Nothing here imports torch or PIL: the pictures arrive as objects with ``save``.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any, Iterable, Sequence

SUITES_JSON, SUITES_MD, EXAMPLES_DIR = "suites.json", "suites.md", "suites"
HEADLINE_SUITE = "t2i"  # the figure `unigen runs` shows when a run has it; else the first suite's primary


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def suite_rows(results: Iterable[Any]) -> list[dict[str, Any]]:
    """One JSON-safe row per ``SuiteResult``: suite, primary, count, seconds, metrics, baseline."""
    rows = []
    for result in results:
        row = result.row()
        rows.append({"suite": row["suite"], "primary": result.primary, "count": row["count"],
                     "seconds": row["seconds"],
                     "metrics": {k: _finite(v) for k, v in row["metrics"].items()},
                     "baseline": {k: _finite(v) for k, v in row["baseline"].items()}})
    return rows


def flat_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """MLflow metrics of the rows: ``eval/<suite>/<metric>`` and ``eval/<suite>/<metric>.baseline``; a metric
    no case measured is left out (a missing point, not a 0)."""
    out: dict[str, float] = {}
    for row in rows:
        for kind, suffix in (("metrics", ""), ("baseline", ".baseline")):
            for metric, value in (row.get(kind) or {}).items():
                if value is not None:
                    out[f"eval/{row['suite']}/{metric}{suffix}"] = float(value)
    return out


def table_rows(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, str, str, bool]]:
    """(suite, metric, value, baseline, is primary) for every metric; each suite's primary metric first."""
    out = []
    for row in rows:
        metrics = row.get("metrics") or {}
        primary = row.get("primary")
        names = ([primary] if primary in metrics else []) + [m for m in metrics if m != primary]
        for metric in names:
            out.append((row["suite"], metric, _number(metrics[metric]),
                        _number((row.get("baseline") or {}).get(metric)), metric == primary))
    return out


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """suite | metric | value | baseline, the primary metric in bold."""
    lines = ["| suite | metric | value | baseline |", "|---|---|---|---|"]
    for suite, metric, value, baseline, primary in table_rows(rows):
        lines.append(f"| {suite} | {f'**{metric}**' if primary else metric} | {value} | {baseline} |")
    return "\n".join(lines)


def write_suite_files(folder: Path, results: Sequence[Any], *, step: int,
                      settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Write ``suites.json``, ``suites.md`` and the example pictures (``suites/<suite>-<i>.png``) of one
    evaluation into ``folder``, replacing an earlier evaluation's suite files there; returns the rows."""
    folder = Path(folder)
    rows = suite_rows(results)
    pictures = folder / EXAMPLES_DIR
    shutil.rmtree(pictures, ignore_errors=True)  # one evaluation's pictures, never a mix of two
    pictures.mkdir(parents=True)
    examples: dict[str, list[str]] = {}
    for result in results:
        for name, image in result.examples:
            image.save(pictures / name)
            examples.setdefault(result.suite, []).append(f"{EXAMPLES_DIR}/{name}")
    document = {"step": step, "settings": settings, "suites": rows, "examples": examples}
    (folder / SUITES_JSON).write_text(json.dumps(document, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    shown = ", ".join(f"{k} {v}" for k, v in settings.items())
    (folder / SUITES_MD).write_text(f"# Evaluation suites at step {step}\n\n{shown}\n\n{markdown_table(rows)}\n\n"
                                    "Bold: the suite's primary metric. Baseline: the suite's trivial baseline, "
                                    "scored the same way (runbooks/evaluation.md).\n", encoding="utf-8")
    return rows


def headline(rows: Sequence[dict[str, Any]] | None) -> str | None:
    """The one figure of ``unigen runs``: ``t2i 0.62`` (t2i's primary metric when present, else the first
    suite's), or None without suite results."""
    if not rows:
        return None
    row = next((r for r in rows if r.get("suite") == HEADLINE_SUITE), rows[0])
    value = (row.get("metrics") or {}).get(row.get("primary"))
    return f"{row['suite']} {_number(value, 2)}"


def suite_lines(rows: Sequence[dict[str, Any]] | None) -> list[str]:
    """One line per suite for ``unigen status``: primary metric, value, baseline, cases."""
    lines = []
    for row in rows or []:
        primary = row.get("primary")
        value = (row.get("metrics") or {}).get(primary)
        baseline = (row.get("baseline") or {}).get(primary)
        lines.append(f"{row['suite']}: {primary} {_number(value)} (baseline {_number(baseline)}), "
                     f"{row.get('count')} cases")
    return lines


def merge_latest_eval(held: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """run.json's ``eval`` after the evaluation ``new``: ``held`` when it is of a later step; ``new`` when
    ``held`` is older; at the same step both merged (``new`` wins, and suites merge by name, so
    ``unigen eval --suite edit`` after training's t2i shows both)."""
    if not held:
        return new
    held_step, new_step = _step(held), _step(new)
    if held_step > new_step:
        return held
    if held_step < new_step:
        return new
    merged = {**held, **new}
    if held.get("suites") and new.get("suites"):
        fresh = {row["suite"]: row for row in new["suites"]}
        kept = [fresh.pop(row["suite"], row) for row in held["suites"]]
        merged["suites"] = kept + list(fresh.values())
    return merged


def _step(summary: dict[str, Any]) -> int:
    step = summary.get("step")
    return step if isinstance(step, int) else -1


def _number(value: Any, digits: int = 3) -> str:
    number = _finite(value)
    return "-" if number is None else f"{number:.{digits}f}"
