"""``init_from`` checked before anything is queued: a run that is not there, or has nothing to start from,
would otherwise make a run that fails at its start (runtime/init_from.py ``locate_init`` reads the same
things, in the same places).

- ``run:<run id>``: the run is under the run root the new run will use (ids and unique prefixes, as
  ``find_run`` takes them), and it has a committed checkpoint: a local ``step-<N>/COMMIT.json``, or a
  durable copy recorded in its run.json. A run still queued or running without one is refused too: the
  new run would start before it saved anything.
- a local path: a ``step-<N>`` folder with COMMIT.json (relative to where you submit, as the run reads it).
- a URI (s3://, gs://, file://): refused, because ``locate_init`` reads only the two forms above (a run's
  durable copy is reached through ``run:<id>``). When it learns to download a URI, only the scheme should
  be checked here: reaching the store needs credentials and a round trip, and the run verifies it anyway.

Only the presence of COMMIT.json is checked here, not the manifests' sha256 (that reads every byte);
``unigen resume RUN --plan`` does the full check.
"""
from __future__ import annotations

import re
from pathlib import Path

from unigen.orchestrator.config.yamlload import Locations
from unigen.orchestrator.errors import Problem, UserError

RUN_REF = re.compile(r"^run:[A-Za-z0-9._-]+$")
_WHERE = ("init_from",)


def init_from_problems(init_from: str | None, locs: Locations, run_root: Path | None) -> list[Problem]:
    """Problems of a recipe's ``init_from``; ``run_root`` None skips looking the run up (no profile)."""
    if init_from is None:
        return []
    if init_from.startswith("run:"):
        if not RUN_REF.match(init_from):
            return [locs.problem(_WHERE, "write run:<run id> (letters, digits, . _ -), e.g. "
                                 "run:smoke-pretrain-20260101-120000-ab12")]
        return [] if run_root is None else _run_problems(init_from[len("run:"):], locs, run_root)
    if "://" in init_from:  # refused until locate_init downloads URIs; then check only the scheme here
        return [locs.problem(_WHERE, f"{init_from!r}: a checkpoint URI is not read by the run (it takes run:<run id> "
                             "or a local step-<N> folder): give run:<id> of the run that wrote it (its durable copy "
                             "is downloaded when the local checkpoints are gone), or copy the step folder here and "
                             "give its path")]
    return _path_problems(init_from, Path(init_from), locs)


def _run_problems(ref: str, locs: Locations, run_root: Path) -> list[Problem]:
    from unigen.orchestrator.runs import find_run

    try:
        ledger = find_run(run_root, ref)
        record = ledger.read()
    except UserError as err:
        text = str(err).split(": `unigen runs`")[0]
        return [locs.problem(_WHERE, f"{text}: `unigen runs --run-root {run_root}` lists the run ids; give one "
                             "of them, or submit the pretrain recipe and this one in one command")]
    except (OSError, ValueError) as err:  # a run.json that cannot be read: say which
        return [locs.problem(_WHERE, f"run {ref!r}: cannot read {run_root / ref / 'run.json'} ({err})")]
    if (record.get("checkpoints") or {}).get("latest_durable") or _committed_steps(ledger.paths.checkpoints):
        return []  # a durable copy counts too: the runtime downloads it when the local ones are gone
    run_id, status = record.get("run_id", ref), record.get("status", "unknown")
    if status in ("queued", "running", "requeued"):
        fix = "wait until it has saved one (checkpoint.every), or submit both recipes in one command"
    else:
        fix = "start from a run that saved one (`unigen runs` lists them, `unigen status RUN` shows its checkpoints)"
    return [locs.problem(_WHERE, f"run {run_id} ({status}) has no committed checkpoint to start from: {fix}")]


def _committed_steps(folder: Path) -> list[Path]:
    """The ``step-<N>`` folders in ``folder`` that have a COMMIT.json, oldest step first."""
    from unigen.orchestrator.checkpoint.layout import COMMIT_NAME, parse_step_dir

    steps = sorted((s, p) for p in (folder.iterdir() if folder.is_dir() else ())
                   if (s := parse_step_dir(p.name)) is not None and (p / COMMIT_NAME).is_file())
    return [p for _, p in steps]


def _path_problems(text: str, path: Path, locs: Locations) -> list[Problem]:
    from unigen.orchestrator.checkpoint.layout import COMMIT_NAME

    if not path.exists():
        return [locs.problem(_WHERE, f"checkpoint {text!r} not found (paths are relative to where you submit): "
                             "give run:<run id>, or an existing step-<N> checkpoint folder")]
    if (path / COMMIT_NAME).is_file():
        return []
    if (path / "run.json").is_file():
        hint = f"it is a run folder: write init_from=run:{path.name}"
    else:
        steps = _committed_steps(path)
        hint = (f"it is a checkpoints folder: give one of its step folders, e.g. {steps[-1]}" if steps
                else "give a step-<N> folder that has it, or run:<run id>")
    return [locs.problem(_WHERE, f"{text!r} is not a committed checkpoint (no {COMMIT_NAME} in it): {hint}")]
