"""``unigen lineage RUN [--run-root DIR]``: where a model came from.

Prints the chain through RUN, oldest first: each stage's data sources, the stage run, the checkpoint
the next stage started from, and finally the exported model, e.g.::

    data sources (stage 1)
      cc3m  s3://data/cc3m/{00000..00099}.tar  webdataset  t2i  weight 1.0  digest 5d41402abc4b2a76
    stage-1 run     smoke-pretrain-20261125-...  pretrain  completed  MLflow 3f2a...
    checkpoint      s3://ckpt/smoke-pretrain/step-20  step 20  COMMIT sha256 9b71d224bd62f378...
    ...
    exported model  /runs/smoke-instruct-.../export

Read from run.json files (and the tracker's tracking/checkpoints.json), so it works offline.
"""
from __future__ import annotations

import argparse
from typing import Any

from unigen.orchestrator.commands.runs import run_root_arg

LABEL_WIDTH = 16


def _line(label: str, text: str) -> str:
    return f"{label.ljust(LABEL_WIDTH)}{text}".rstrip()


def _checkpoint_text(ckpt: dict[str, Any]) -> str:
    parts = [ckpt.get("uri") or "(local checkpoint)"]
    if ckpt.get("step") is not None:
        parts.append(f"step {ckpt['step']}")
    if ckpt.get("commit_sha256"):
        parts.append(f"COMMIT sha256 {ckpt['commit_sha256']}")
    return "  ".join(parts)


def _run_text(record: dict[str, Any]) -> str:
    mlflow_rec = record.get("mlflow") or {}
    parts = [record["run_id"], record.get("stage") or "-", record.get("status") or "-",
             f"MLflow {mlflow_rec.get('run_id') or '-'}"]
    if mlflow_rec.get("parent_run_id"):
        parts.append(f"parent MLflow {mlflow_rec['parent_run_id']}")
    return "  ".join(parts)


def render_chain(chain) -> list[str]:
    """The lines ``unigen lineage`` prints for a ``tracking.lineage.Chain``."""
    from unigen.orchestrator.tracking.lineage import export_path, latest_durable

    lines = []
    if chain.missing_parent:
        lines.append(_line("started from", f"run {chain.missing_parent} (not under this run root)"))
    for i, stage in enumerate(chain.stages, 1):
        if i > 1 or stage.started_from:
            lines.append(_line("checkpoint", _checkpoint_text(stage.started_from) if stage.started_from else "-"))
        lines.append(f"data sources (stage {i})")
        for src in stage.sources:
            lines.append(f"  {src['name']}  {src['uri']}  {src['format']}  {src['task']}  weight {src['weight']}"
                         f"  digest {src['digest']}")
        if not stage.sources:
            lines.append("  (none recorded)")
        lines.append(_line(f"stage-{i} run", _run_text(stage.record)))
        others = chain.branches.get(stage.record["run_id"])
        if others:
            lines.append(_line("", f"(also started from it: {', '.join(others)})"))
    last = chain.stages[-1]
    durable = latest_durable(last.record, last.run_dir)
    if durable:
        lines.append(_line("checkpoint", _checkpoint_text(durable) + "  (latest durable)"))
    exported = export_path(last.record, last.run_dir)
    lines.append(_line("exported model", exported or "- (not exported yet: `unigen export`)"))
    return lines


def run(args: argparse.Namespace) -> int:
    from unigen.orchestrator.tracking.lineage import build_chain

    chain = build_chain(run_root_arg(args), args.run)
    print("\n".join(render_chain(chain)))
    return 0
