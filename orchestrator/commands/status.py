"""``unigen status [RUN]``: the state of every run (a table), or of one run (its whole story).

Reads run.json; the launcher adds what its scheduler says right now (SLURM's PENDING/RUNNING, a Ray
job's state, a local supervisor that is gone). Exit 0 also for failed runs: the command worked.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from unigen.orchestrator.commands.runref import ledger_arg
from unigen.orchestrator.commands.runs import render_table, run_root_arg
from unigen.orchestrator.runs import TERMINAL, RunPaths, list_runs
from unigen.orchestrator.runtime.suite_results import suite_lines
from unigen.orchestrator.tracking.store import display_uri, run_store_uri

HEADERS = ("RUN", "STAGE", "STATUS", "STEP", "LOSS", "ATTEMPTS", "DURABLE", "LAUNCHER")


def _step(record: dict[str, Any]) -> str:
    progress = record.get("progress") or {}
    return f"{progress.get('step') or 0}/{progress.get('max_steps') or '?'}"


def _loss(record: dict[str, Any]) -> str:
    loss = (record.get("progress") or {}).get("loss")
    return "-" if loss is None else f"{loss:.4f}"


def _durable(record: dict[str, Any]) -> str:
    durable = (record.get("checkpoints") or {}).get("latest_durable")
    return f"step-{durable['step']}" if durable else "-"


def _eval_text(latest: dict[str, Any], paths: RunPaths) -> str:
    """The latest evaluation (run.json's ``eval``): its step, val_loss and where its images are (its suites
    follow, one line each)."""
    loss = latest.get("val_loss")
    text = f"step {latest.get('step')}" + (f", val_loss {loss:.4f}" if loss is not None else "")
    images = paths.resolve(latest.get("images"))
    return text + (f", images in {images}" if images else "") + " (all: eval.jsonl)"


def _status_text(record: dict[str, Any]) -> str:
    """The status, with what the launcher's scheduler says now while the run is not over."""
    if record.get("status") in TERMINAL:
        return record["status"]
    from unigen.orchestrator.launchers import launcher_of

    try:
        state = launcher_of(record).scheduler_state(record)
    except Exception as e:  # noqa: BLE001 - a scheduler that does not answer must not break status
        state = f"unknown ({type(e).__name__}: {e})"
    return f"{record['status']} ({state})" if state else record["status"]


def describe_run(record: dict[str, Any], run_dir) -> str:
    ckpts = record.get("checkpoints") or {}
    local, durable = ckpts.get("latest_local"), ckpts.get("latest_durable")
    mlflow = record.get("mlflow") or {}
    run_dir = Path(run_dir).absolute()  # paths in run.json are relative to it: show them whole
    paths = RunPaths(run_dir)
    lines = [f"run:        {record['run_id']}  ({run_dir})",
             f"stage:      {record.get('stage')}   recipe {record.get('recipe_path')}   profile {record.get('profile_name')}",
             f"status:     {_status_text(record)}",
             f"progress:   step {_step(record)}, loss {_loss(record)}"]
    if record.get("init_from"):
        lines.append(f"init_from:  {record['init_from']}")
    lines.append(f"checkpoint: newest local {('step-%s' % local['step']) if local else '-'}, newest durable "
                 f"{('step-%s at %s' % (durable['step'], durable.get('uri'))) if durable else '-'}"
                 + (f", last save took {ckpts['last_save_s']} s" if ckpts.get("last_save_s") is not None else ""))
    if record.get("eval"):
        lines.append(f"eval:       {_eval_text(record['eval'], paths)}")
        lines += [f"{'':12}{line}" for line in suite_lines(record["eval"].get("suites"))]
    if record.get("export"):
        lines.append(f"export:     {paths.resolve(record['export'].get('path'))}")
    lines.append(f"mlflow:     run {mlflow.get('run_id') or '-'} in experiment {mlflow.get('experiment_name') or '-'} "
                 f"at {display_uri(run_store_uri(record, run_dir)) or '-'}")
    attempts = record.get("attempts") or []
    lines.append(f"attempts:   {len(attempts)}")
    for a in attempts:
        end = a.get("ended_at") or "running"
        lines.append(f"  #{a['attempt']}: job {a.get('job_id')} on {a.get('nodes')}, {a.get('started_at')} -> {end}, "
                     f"{a.get('exit_reason') or '-'} (exit {a.get('exit_code') if a.get('exit_code') is not None else '-'})")
    if record.get("error"):
        lines.append(f"error:      {record['error']}")
    lines.append(f"logs:       {run_dir}/logs/ (unigen logs {record['run_id']} [--rank R] [--follow])")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "run", None):
        ledger = ledger_arg(args)
        print(describe_run(ledger.read(), ledger.paths.root))
        return 0
    root = run_root_arg(args)
    records = list_runs(root)
    if not records:
        print(f"no runs under {root}")
        return 0
    rows = [(r["run_id"], r.get("stage") or "-", _status_text(r), _step(r), _loss(r), str(len(r.get("attempts") or [])),
             _durable(r), r.get("launcher") or "-") for r in records]
    print(render_table(HEADERS, rows))
    return 0
