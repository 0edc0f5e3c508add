"""Resolve a recipe's ``init_from`` (stage 2 starting from stage 1) to weights on local disk.

``init_from`` is ``run:<run id>`` (that run's newest committed checkpoint that verifies, local first,
then its durable copy) or a local ``step-<N>`` folder (a remote URI is refused by ``unigen validate``:
config/init_check.py says how to name its run instead). Rank 0 verifies,
downloads if needed, and consolidates the ZeRO shards into one fp32 state dict under
``<run_dir>/init/``; every rank then loads that file. The returned lineage (stage-1 run, checkpoint
URI, step, MLflow run id) goes to run.json and MLflow.

That file holds stage 1's trained tensors only (checkpoints leave frozen parameters out): stage 2's frozen
parts are those its own build made (build.load_init_weights accepts them missing and refuses a missing
trained one). With pretrained parts that is the same source stage 1 had; with a preset's random parts
(``tiny``) it is the same tensors when both stages build the same model with the same ``train.seed``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from unigen.orchestrator.atomic import atomic_open
from unigen.orchestrator.checkpoint import COMMIT_NAME, CheckpointError, CheckpointManager
from unigen.orchestrator.comm import Comm
from unigen.orchestrator.config.recorded import recorded_recipe
from unigen.orchestrator.errors import UserError
from unigen.orchestrator.runs import checkpoint_mirror, find_run

log = logging.getLogger("unigen.runtime")


def resolve_init(init_from: str | None, *, run_dir: Path, comm: Comm,
                 storage_options: dict[str, Any] | None) -> tuple[Path | None, dict[str, Any] | None]:
    """(path of the consolidated state dict, lineage) or (None, None) without ``init_from``."""
    if not init_from:
        return None, None
    out_dir = run_dir / "init"
    weights = out_dir / "weights.pt"
    lineage_path = out_dir / "lineage.json"
    if comm.rank == 0 and not (weights.is_file() and lineage_path.is_file()):
        import torch

        from unigen.orchestrator.runtime.consolidate import fp32_state_dict

        step_dir, lineage = locate_init(init_from, run_dir=run_dir, storage_options=storage_options)
        out_dir.mkdir(parents=True, exist_ok=True)
        state = fp32_state_dict(step_dir)
        with atomic_open(weights, "wb") as fh:
            torch.save(state, fh)
        lineage_path.write_text(json.dumps(lineage, indent=2))
    comm.barrier()
    return weights, json.loads(lineage_path.read_text())


def locate_init(init_from: str, *, run_dir: Path, storage_options) -> tuple[Path, dict[str, Any]]:
    """The verified step folder ``init_from`` names, on local disk (a run's durable copy is downloaded when
    its local checkpoints are gone), and the lineage to record."""
    if init_from.startswith("run:"):
        ref = init_from[len("run:"):]
        other = find_run(run_dir.parent, ref)
        record = other.read()
        if record["status"] != "completed":
            log.warning("init_from %s: that run is %s; using its newest verified checkpoint", ref, record["status"])
        mirror = checkpoint_mirror(recorded_recipe(record, source=str(other.paths.ledger)), record["run_id"])
        manager = CheckpointManager(other.paths.checkpoints, remote_uri=mirror, storage_options=storage_options)
        try:
            info = manager.resume()
        finally:
            manager.close()
        if info is None:
            raise UserError(f"init_from {init_from}: run {record['run_id']} has no committed checkpoint yet")
        durable = (record.get("checkpoints") or {}).get("latest_durable") or {}
        uri = durable.get("uri") if durable.get("step") == info.step else None
        # A local step folder of that run is named by run id and step only (`checkpoint_path` inside its
        # folder): the runs root may move, and the run is found under it again at read time.
        local = None if uri else other.paths.record_path(info.path)
        return Path(info.path), {
            "run_id": record["run_id"], "stage": record["stage"], "step": info.step,
            "checkpoint": uri, **({"checkpoint_path": local} if local else {}),
            "mlflow_run_id": (record.get("mlflow") or {}).get("run_id"),
        }
    path = Path(init_from)
    commit_file = path / COMMIT_NAME
    if not commit_file.is_file():
        raise UserError(f"init_from {init_from!r}: not `run:<run id>` and not a committed checkpoint folder "
                        f"(a step-<N> folder with {COMMIT_NAME})")
    manager = CheckpointManager(path.parent)
    plan = manager.plan_resume()
    if plan.chosen is None or Path(plan.chosen.path) != path:
        raise CheckpointError(f"init_from {init_from!r} does not verify:\n{plan.describe()}")
    commit = json.loads(commit_file.read_text())
    return path, {"run_id": None, "stage": None, "step": commit["step"], "checkpoint": str(path),
                  "mlflow_run_id": (commit.get("metadata") or {}).get("mlflow_run_id")}
