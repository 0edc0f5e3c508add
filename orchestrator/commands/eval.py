"""``unigen eval RUN [--step N] [--suite S ...] [--samples N] [--out DIR] [--steps N] [--guidance G] [--seed S]``.

Scores a run's model with the evaluation suites (``unigen.model.evaluation.suites``; runbooks/evaluation.md,
"Suites"): the run's export for its final step, else its newest committed checkpoint; ``--step N`` picks
``checkpoints/step-N`` (verified, then consolidated). Suites: ``--suite``, else the recipe's ``eval.suites``,
else all of them. Cases, seed and sampling: the recipe's ``eval:`` section unless given here.

Prints a line per suite as it finishes, then the table (suite, metric, value, baseline; each suite's primary
metric first, marked), and writes:
- ``--out DIR`` (default ``<run>/eval/step-<N>/``): ``suites.json``, ``suites.md``, the example pictures
  under ``suites/``;
- ``<run>/eval.jsonl``: a line with ``source: "unigen eval"``, the step and the suite rows;
- run.json ``eval``: when this step is at least as new as the one it holds (``unigen runs``, ``unigen status``);
- MLflow, into the run's MLflow run: ``eval/<suite>/<metric>`` and ``.baseline`` at the step, the files as
  artifacts ``eval/step-<N>/``; spooled for ``unigen runs --sync`` when MLflow does not answer.
Exit 0; 2 (``error: ...``) for an unknown run, suite or a step without a usable checkpoint.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from unigen.orchestrator.commands.runref import ledger_arg, load_run_model, run_model
from unigen.orchestrator.errors import UserError

SOURCE = "unigen eval"
HEADERS = ("SUITE", "METRIC", "VALUE", "BASELINE")
# setting -> (flag, whether a value is allowed, what to give instead): the bounds of the recipe's eval fields
FLAGS = {"samples": ("--samples", lambda v: v >= 1, "at least 1 case per suite"),
         "seed": ("--seed", lambda v: v >= 0, "a seed of 0 or more"),
         "num_inference_steps": ("--steps", lambda v: v >= 1, "at least 1 sampling step"),
         "guidance_scale": ("--guidance", lambda v: v > 0, "a scale above 0 (1: no guidance)"),
         "image_guidance_scale": ("--image-guidance", lambda v: v > 0, "a scale above 0 (1: no guidance)")}


def run(args: argparse.Namespace) -> int:
    from unigen.orchestrator.runtime.evaluation import step_folder
    from unigen.orchestrator.runtime.suite_results import write_suite_files

    ledger = ledger_arg(args)
    record = ledger.read()
    suites, settings = plan(args, record)
    where = run_model(ledger, args.step)  # a bad --step fails here, before minutes of loading
    out = Path(args.out).expanduser().resolve() if args.out else step_folder(ledger.paths.root, where.step)
    print(f"evaluating {record['run_id']} step {where.step} ({'export' if where.export else 'checkpoint'} "
          f"{where.path}) on {', '.join(suites)}: {settings['samples']} cases each", flush=True)
    import torch
    from unigen.model.evaluation.suites import run_suites

    pipe = load_run_model(ledger, where)
    if torch.cuda.is_available():  # the suites draw hundreds of pictures
        pipe = pipe.to("cuda")
    start = time.perf_counter()
    results = run_suites(pipe, suites, samples=settings["samples"], seed=settings["seed"],
                         sampling=_sampling(settings), log=lambda line: print(line, flush=True))
    seconds = time.perf_counter() - start
    rows = write_suite_files(out, results, step=where.step, settings=settings)
    print(f"\n{table(rows)}\n")
    _record(ledger, where, out, rows, {"settings": settings, "eval_s": round(seconds, 2)})
    return 0


def plan(args: argparse.Namespace, record: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The suites to run and the settings (samples, seed, sampling): the command line's, else the recipe's
    ``eval:`` section's. A UserError for an unknown suite or a setting out of range."""
    from unigen.model.evaluation.suites import SUITES
    from unigen.orchestrator.config.recipe import check_suite_name
    from unigen.orchestrator.config.recorded import recorded_recipe

    section = recorded_recipe(record).eval
    suites = list(dict.fromkeys(args.suite or section.suites or SUITES))
    for name in suites:
        try:
            check_suite_name(name)
        except ValueError as err:
            raise UserError(f"--suite: {err}") from None
    given = {"samples": args.samples, "seed": args.seed, "num_inference_steps": args.steps,
             "guidance_scale": args.guidance, "image_guidance_scale": getattr(args, "image_guidance", None)}
    for key, value in given.items():
        flag, allowed, instead = FLAGS[key]
        if value is not None and not allowed(value):
            raise UserError(f"{flag} {value}: give {instead}")
    settings = {"samples": section.suite_samples, "seed": section.seed, **_sampling(section.model_dump())}
    settings.update({k: v for k, v in given.items() if v is not None})
    return suites, settings


def table(rows: list[dict[str, Any]]) -> str:
    """suite, metric, value, baseline: each suite's primary metric first, marked ``*``."""
    from unigen.orchestrator.commands.runs import render_table
    from unigen.orchestrator.runtime.suite_results import table_rows

    cells = [(suite, f"{metric} *" if primary else metric, value, baseline)
             for suite, metric, value, baseline, primary in table_rows(rows)]
    return render_table(HEADERS, cells) + "\n* the suite's primary metric (shown by unigen runs and unigen status)"


def _sampling(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: settings[k] for k in ("num_inference_steps", "guidance_scale", "image_guidance_scale")}


def _record(ledger, where, out: Path, rows: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    """eval.jsonl, run.json and MLflow, then a line saying what was written."""
    from unigen.orchestrator.runs import now_iso

    root = ledger.paths.root
    line = {"step": where.step, "source": SOURCE, "at": now_iso(), "model": ledger.paths.record_path(where.path),
            "folder": ledger.paths.record_path(out), **extra, "suites": rows}
    with open(root / "eval.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")
    shown = _record_latest(ledger, where.step, rows, line["at"])
    left = _track(ledger, where.step, rows, out)
    print(f"wrote {out}/ (suites.json, suites.md, suites/), a line in {root / 'eval.jsonl'}; "
          + ("run.json eval updated" if shown else "run.json eval kept (it holds a later step)"))
    if left:
        print(f"note: MLflow did not take the results: {left} tracking call(s) wait in the run's spool; "
              "`unigen runs --sync` sends them")


def _record_latest(ledger, step: int, rows: list[dict[str, Any]], at: str) -> bool:
    """run.json's ``eval`` gets these results when ``step`` is at least as new as what it holds (locked
    read-modify-write: a training attempt may be writing it too). True when it did."""
    from unigen.orchestrator.runtime.suite_results import merge_latest_eval

    summary = {"step": step, "suites": rows, "at": at, "source": SOURCE}
    taken = []

    def change(r: dict[str, Any]) -> None:
        merged = merge_latest_eval(r.get("eval"), summary)
        taken.append(merged is not r.get("eval"))
        r["eval"] = merged

    ledger.update(change)
    return taken[-1]


def _track(ledger, step: int, rows: list[dict[str, Any]], out: Path) -> int:
    """MLflow: the metrics at ``step``, suites.json and suites.md, the pictures; returns calls left spooled."""
    from unigen.orchestrator.runtime.suite_results import EXAMPLES_DIR, SUITES_JSON, SUITES_MD, flat_metrics
    from unigen.orchestrator.tracking import record_evaluation

    prefix = f"eval/step-{step}"
    texts = {f"{prefix}/{name}": (out / name).read_text(encoding="utf-8") for name in (SUITES_JSON, SUITES_MD)}
    return record_evaluation(ledger, step, flat_metrics(rows), texts=texts,
                             folders={f"{prefix}/{EXAMPLES_DIR}": out / EXAMPLES_DIR})
