"""Finding the run a command names, and the model files a run or checkpoint holds."""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unigen.orchestrator.commands.runs import run_root_arg
from unigen.orchestrator.errors import UserError
from unigen.orchestrator.runs import RunLedger, checkpoint_mirror, find_run


def ledger_arg(args: argparse.Namespace) -> RunLedger:
    """The run named by ``args.run`` (id, unique prefix or folder) under the run root."""
    return find_run(run_root_arg(args), args.run)


def checkpoint_manager(ledger: RunLedger, *, with_remote: bool = True):
    """A CheckpointManager over the run's local checkpoints (and remote mirror), for planning."""
    from unigen.orchestrator.checkpoint import CheckpointManager
    from unigen.orchestrator.checkpoint.remote import storage_options_from_profile
    from unigen.orchestrator.config.recorded import recorded_profile, recorded_recipe

    record, source = ledger.read(), str(ledger.paths.ledger)
    remote = checkpoint_mirror(recorded_recipe(record, source=source), record["run_id"]) if with_remote else None
    return CheckpointManager(ledger.paths.checkpoints, remote_uri=remote,
                             storage_options=storage_options_from_profile(recorded_profile(record, source=source)))


def newest_local_checkpoint(ledger: RunLedger) -> Path:
    """The newest local checkpoint whose COMMIT and manifests verify (sha256)."""
    plan = checkpoint_manager(ledger, with_remote=False).plan_resume(strict=False)
    if plan.chosen is None:
        why = plan.error or "it has no committed checkpoint yet"
        raise UserError(f"run {ledger.run_id}: no usable local checkpoint ({why}); "
                        f"`unigen resume {ledger.run_id} --plan` explains")
    return Path(plan.chosen.location)


def committed_checkpoint(ledger: RunLedger, step: int) -> Path:
    """The run's local checkpoint of ``step``, once its COMMIT and manifests verify (sha256)."""
    from unigen.orchestrator.checkpoint.plan import scan_local
    from unigen.orchestrator.checkpoint.verify import LocalStepView, verify_step

    found = scan_local(ledger.paths.checkpoints)
    if step not in found:
        have = ", ".join(f"step-{s}" for s in sorted(found)) or "none"
        raise UserError(f"--step {step}: run {ledger.run_id} has no checkpoint step-{step} (local checkpoints: "
                        f"{have}); pick one of those, or leave --step out for the final model")
    verdict = verify_step(LocalStepView(found[step]), step)
    if not verdict.ok:
        raise UserError(f"--step {step}: checkpoint {found[step]} is not usable ({verdict.reason}); pick another "
                        f"step, or see `unigen resume {ledger.run_id} --plan`")
    return found[step]


@dataclass(frozen=True)
class RunModel:
    """Where a run's weights of one step are: its export folder, or a committed checkpoint."""

    path: Path
    step: int
    export: bool


def run_model(ledger: RunLedger, step: int | None = None) -> RunModel:
    """The run's model of ``step`` (None: the newest): its export when the export holds that step, else the
    committed checkpoint. Finds and checks files only; ``load_run_model`` loads it."""
    record = ledger.read()
    recorded = record.get("export") or {}
    export = ledger.paths.resolve(recorded.get("path")) or ledger.paths.export
    if is_model_folder(export):
        info = read_json(export / "unigen_export.json") or {}
        export_step = info.get("step", recorded.get("step"))
        if export_step is None:
            export_step = (record.get("progress") or {}).get("step") or 0
        if step is None or step == export_step:
            return RunModel(export, int(export_step), True)
    if step is None:
        newest = newest_local_checkpoint(ledger)
        return RunModel(newest, int(newest.name.split("-")[-1]), False)
    return RunModel(committed_checkpoint(ledger, step), step, False)


def load_run_model(ledger: RunLedger, where: RunModel):
    """The UniGenPipeline of ``where`` (a checkpoint is consolidated into a temporary export first)."""
    from unigen.model import UniGenPipeline

    if where.export:
        return UniGenPipeline.from_pretrained(where.path)
    return _pipeline_from_checkpoint(ledger, where.path)


def is_model_folder(path: Path) -> bool:
    """A ``UniGenPipeline.save_pretrained`` folder (an export): the diffusers-style layout, or the one-file
    layout of older versions (unigen.model.export_layout.layout, without importing torch here)."""
    if (path / "model_index.json").is_file() and (path / "unigen" / "config.json").is_file():
        return True
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def load_pipeline(args: argparse.Namespace):
    """The UniGenPipeline of ``--run`` (its export, else its newest checkpoint) or ``--checkpoint``
    (an export folder, or a committed step folder of a run)."""
    from unigen.model import UniGenPipeline

    if getattr(args, "checkpoint", None):
        path = Path(args.checkpoint).expanduser()
        if is_model_folder(path):
            return UniGenPipeline.from_pretrained(path)
        if (path / "COMMIT.json").is_file():
            run_dir = path.parent.parent
            if not (run_dir / "run.json").is_file():
                raise UserError(f"{path} is a checkpoint outside a run folder: its recipe is unknown; "
                                f"export it with `unigen export` from its run, or pass the run with --run")
            return _pipeline_from_checkpoint(RunLedger(run_dir), path)
        raise UserError(f"--checkpoint {path}: neither an export (model_index.json + unigen/, or an older "
                        "config.json + model.safetensors) nor a committed checkpoint (step-<N>/ with COMMIT.json)")
    ledger = ledger_arg(args)
    return load_run_model(ledger, run_model(ledger))


def _pipeline_from_checkpoint(ledger: RunLedger, step_dir: Path):
    """Consolidate a ZeRO checkpoint into a temporary export and load it."""
    import tempfile

    from unigen.model import UniGenPipeline
    from unigen.orchestrator.config.recorded import recorded_recipe
    from unigen.orchestrator.runtime.export import export_checkpoint

    record = ledger.read()
    with tempfile.TemporaryDirectory(prefix="unigen-load-") as tmp:
        out = export_checkpoint(recorded_recipe(record), step_dir, Path(tmp) / "model", run_id=record["run_id"])
        return UniGenPipeline.from_pretrained(out)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
