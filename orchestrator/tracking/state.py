"""The tracker's own small files in ``<run_dir>/tracking/``, readable without MLflow:

- ``state.json``: the highest step any attempt logged (``max_step``). A resumed attempt compares its
  steps with it to mark replayed ones. It is written BEFORE the step's metrics go to MLflow, so a
  hard kill can never leave MLflow with a step this file does not know (which would come back
  twice, unmarked); one small atomic write per logged step (``train.log_every``) is cheap.
- ``checkpoints.json``: every durable checkpoint logged (step, URI, COMMIT sha256), for
  ``unigen lineage`` and as the table uploaded to MLflow.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from unigen.orchestrator.atomic import atomic_write_text

STATE_NAME = "state.json"
CHECKPOINTS_NAME = "checkpoints.json"


def tracking_dir(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / "tracking"


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


class StepState:
    """``max_step`` across attempts, persisted to ``state.json`` (see the module docstring)."""

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.path = tracking_dir(run_dir) / STATE_NAME
        self.max_step: int | None = _read_json(self.path, {}).get("max_step")
        self._saved_step = self.max_step

    def observe(self, step: int) -> None:
        if self.max_step is None or step > self.max_step:
            self.max_step = step
            self.save()

    def save(self) -> None:
        if self.max_step is None or self.max_step == self._saved_step:
            return
        try:
            _write_json(self.path, {"max_step": self.max_step})
        except OSError:
            return  # a full disk must not stop training; the next save retries
        self._saved_step = self.max_step


def read_checkpoints(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Durable checkpoints logged for a run, oldest step first ([] when none)."""
    found = _read_json(tracking_dir(run_dir) / CHECKPOINTS_NAME, [])
    return sorted(found, key=lambda c: c.get("step", 0)) if isinstance(found, list) else []


def add_checkpoint(run_dir: str | os.PathLike[str], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Record ``entry`` (replacing one of the same step); returns the whole list."""
    entries = [c for c in read_checkpoints(run_dir) if c.get("step") != entry["step"]]
    entries.append(entry)
    entries.sort(key=lambda c: c["step"])
    _write_json(tracking_dir(run_dir) / CHECKPOINTS_NAME, entries)
    return entries
