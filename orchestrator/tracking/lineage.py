"""Lineage from the run ledgers: which stage-1 run and checkpoint a stage-2 run started from, and the
chain data sources -> stage-1 run -> checkpoint -> stage-2 run -> exported model.

Read from run.json files and the tracker's ``tracking/checkpoints.json`` only, so it works with
MLflow down and for runs that never reached it. ``init_from`` in run.json may be a string
(``run:<run id>`` or a checkpoint URI, as in recipes) or a dict with ``run`` / ``run_id``, ``uri`` /
``checkpoint_uri`` / ``checkpoint`` and ``step`` (as resolved by the submitter or the runtime).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unigen.orchestrator.config.recorded import recorded_recipe
from unigen.orchestrator.errors import UserError
from unigen.orchestrator.runs import RunPaths, find_run, list_runs
from unigen.orchestrator.tracking.payload import data_sources
from unigen.orchestrator.tracking.state import read_checkpoints

log = logging.getLogger("unigen.tracking")


@dataclass(frozen=True)
class InitFrom:
    """Where a run's weights came from: another run, a checkpoint URI, or both."""

    run: str | None = None
    uri: str | None = None
    step: int | None = None
    path: str | None = None  # a local step folder of ``run``, relative to that run's folder (movable runs)


def parse_init_from(value: Any) -> InitFrom:
    """``init_from`` in any of the forms in the module docstring; empty InitFrom for None."""
    if not value:
        return InitFrom()
    if isinstance(value, str):
        return InitFrom(run=value[4:]) if value.startswith("run:") else InitFrom(uri=value)
    if isinstance(value, dict):
        run = value.get("run") or value.get("run_id")
        if isinstance(run, str) and run.startswith("run:"):
            run = run[4:]
        uri = value.get("uri") or value.get("checkpoint_uri") or value.get("checkpoint")
        step = value.get("step")
        return InitFrom(run=run, uri=uri, step=int(step) if step is not None else None,
                        path=value.get("checkpoint_path"))
    raise UserError(f"init_from {value!r} in run.json is neither 'run:<id>', a checkpoint URI nor a mapping")


def latest_durable(record: dict[str, Any], run_dir: Path) -> dict[str, Any] | None:
    """The newest durable checkpoint of a run: {step, uri?, commit_sha256?}, from the tracker's
    checkpoints.json and run.json's ``checkpoints.latest_durable`` (the newer one wins)."""
    logged = read_checkpoints(run_dir)
    best = dict(logged[-1]) if logged else None
    ledger_value = (record.get("checkpoints") or {}).get("latest_durable")
    if isinstance(ledger_value, int):
        ledger_value = {"step": ledger_value}
    if isinstance(ledger_value, dict) and ledger_value.get("step") is not None:
        if best is None or ledger_value["step"] > best.get("step", -1):
            best = {**ledger_value}
    return best


def checkpoint_used(init: InitFrom, parent_record: dict[str, Any] | None, parent_dir: Path | None) -> dict[str, Any]:
    """The checkpoint a run started from: its init_from, completed with what the parent run logged
    (step and COMMIT sha256 of the same URI or step, or the parent's latest durable one)."""
    logged = read_checkpoints(parent_dir) if parent_dir else []
    for entry in logged:
        if (init.uri and entry.get("uri") == init.uri) or (not init.uri and init.step == entry.get("step")):
            return {**entry, "uri": init.uri or entry.get("uri")}
    if init.uri:
        return {"uri": init.uri, "step": init.step}
    if init.path and parent_dir is not None:  # a local step folder of the parent, wherever it is now
        return {"uri": str(RunPaths(Path(parent_dir)).resolve(init.path)), "step": init.step}
    if init.step is not None:  # a local checkpoint of the parent, named by its step (runtime.init_from)
        return {"step": init.step}
    if parent_record is not None and parent_dir is not None:
        return latest_durable(parent_record, parent_dir) or {}
    return {}


def stage1_link(record: dict[str, Any], run_root: Path) -> dict[str, Any] | None:
    """What ``Tracker.open`` tags a stage-2 run with: the stage-1 run folder (its MLflow id is read
    from it when the op is sent; its name under the runs root, which may move before the op is sent),
    run id, checkpoint URI and step. None without ``init_from``."""
    init = parse_init_from(record.get("init_from"))
    if not init.run and not init.uri:
        return None
    stage1_dir, stage1_record = None, None
    if init.run:
        try:
            ledger = find_run(run_root, init.run)
            stage1_dir, stage1_record = ledger.paths.root, ledger.read()
        except UserError as e:
            log.warning("init_from names run %s, not found under %s (%s): linking by id only", init.run,
                        run_root, e)
    ckpt = checkpoint_used(init, stage1_record, stage1_dir)
    return {"stage1_dir": stage1_dir.name if stage1_dir else None,
            "run_id": stage1_record["run_id"] if stage1_record else init.run,
            "mlflow_run_id": None, "checkpoint_uri": ckpt.get("uri"), "step": ckpt.get("step")}


@dataclass
class StageLink:
    """One run in a lineage chain, with the checkpoint it started from."""

    record: dict[str, Any]
    run_dir: Path
    started_from: dict[str, Any] = field(default_factory=dict)  # checkpoint of the previous stage
    sources: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Chain:
    """Runs from the first stage to the last, plus runs that branch off the shown line."""

    stages: list[StageLink]
    branches: dict[str, list[str]] = field(default_factory=dict)  # run id -> other children's ids
    missing_parent: str | None = None  # init_from names a run that is not under the run root


def build_chain(run_root: str | Path, ref: str) -> Chain:
    """The lineage chain through run ``ref`` (id, unique prefix or folder): its ancestors by
    ``init_from``, itself, and its descendants (the oldest child at each branch)."""
    root = Path(run_root)
    start = find_run(root, ref)
    records = {r["run_id"]: r for r in list_runs(root)}
    start_record = start.read()
    records[start_record["run_id"]] = start_record
    dirs = {rid: root / rid for rid in records}
    dirs[start_record["run_id"]] = start.paths.root

    line, missing = _walk_up(start_record["run_id"], records)
    _walk_down(line, records)
    branches = {rid: others for rid in line if (others := [c for c in _children(rid, records) if c not in line])}

    stages = []
    for i, rid in enumerate(line):
        record = records[rid]
        started_from: dict[str, Any] = {}
        init = parse_init_from(record.get("init_from"))
        if i > 0:
            started_from = checkpoint_used(init, records[line[i - 1]], dirs[line[i - 1]])
        elif init.uri:
            started_from = {"uri": init.uri, "step": init.step}
        data = recorded_recipe(record, source=str(dirs[rid] / "run.json")).data
        stages.append(StageLink(record=record, run_dir=dirs[rid], started_from=started_from,
                                sources=data_sources(data)))
    return Chain(stages=stages, branches=branches, missing_parent=missing)


def _walk_up(run_id: str, records: dict[str, dict[str, Any]]) -> tuple[list[str], str | None]:
    """[oldest ancestor, ..., run_id] by init_from, and the id of a named parent that is missing."""
    line = [run_id]
    while True:
        ref = parse_init_from(records[line[0]].get("init_from")).run
        parent = _match(ref, records)
        if ref and parent is None:
            return line, ref
        if parent is None or parent in line:  # a loop in hand-edited ledgers ends the walk
            return line, None
        line.insert(0, parent)


def _children(run_id: str, records: dict[str, dict[str, Any]]) -> list[str]:
    """Runs initialised from ``run_id``, oldest first."""
    found = [rid for rid, r in records.items() if _match(parse_init_from(r.get("init_from")).run, records) == run_id]
    return sorted(found, key=lambda rid: (records[rid].get("created_at") or "", rid))


def _walk_down(line: list[str], records: dict[str, dict[str, Any]]) -> None:
    """Extend ``line`` with descendants, taking the oldest child at each branch."""
    while nxt := [rid for rid in _children(line[-1], records) if rid not in line]:
        line.append(nxt[0])


def _match(ref: str | None, records: dict[str, Any]) -> str | None:
    """The run id in ``records`` that ``ref`` names (exact id, else a unique prefix)."""
    if not ref:
        return None
    if ref in records:
        return ref
    hits = [rid for rid in records if rid.startswith(ref)]
    return hits[0] if len(hits) == 1 else None


def export_path(record: dict[str, Any], run_dir: Path | None = None) -> str | None:
    """The exported model folder recorded in run.json (a path, or a dict with ``path``/``uri``); a path
    inside the run folder made absolute from ``run_dir`` when given (see ``RunPaths.resolve``)."""
    value = record.get("export")
    if isinstance(value, dict):
        value = value.get("path") or value.get("uri")
    if not value or run_dir is None or "://" in str(value):
        return value or None
    return str(RunPaths(Path(run_dir)).resolve(value))
