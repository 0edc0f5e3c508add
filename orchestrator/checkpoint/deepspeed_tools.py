"""DeepSpeed's own entry points in the checkpoints folder: ``latest`` and ``zero_to_fp32.py``.

DeepSpeed lays out a save folder as tag folders plus ``latest`` (the newest tag) and its recovery
script, and documents ``cd <save folder> && python zero_to_fp32.py . <output folder>``. The runtime
saves with ``save_dir=<run>/checkpoints, tag=step-<N>``, so the checkpoints folder is DeepSpeed's save
folder; these files beside the step folders make that command work unchanged, locally and in the mirror:

    latest                  "step-<N>": the newest committed step. Written only after its COMMIT.json
                            and LATEST; removed when the step it names is quarantined or deleted
    zero_to_fp32.py         DeepSpeed's script (and zero_to_torch.py, which imports it), copied from the
    zero_to_torch.py        installed DeepSpeed, only for a step with ZeRO partitions: the script
                            refuses a stage-0 folder (use ``unigen export`` for those)

Both are conveniences for people and DeepSpeed's tools: unigen's resume never reads them (COMMIT.json
decides), and a failure to write them is logged, never a failed save. DeepSpeed's engine also copies
the scripts during a ZeRO save (a plain copy; a crash can tear it); they are rewritten atomically here
when their bytes differ from the installed ones. On a case-insensitive filesystem ``latest`` and
``LATEST`` are one file holding the same bytes, so neither is ever removed there.
Standard library only: DeepSpeed is located with ``find_spec``, not imported.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from unigen.orchestrator.checkpoint.layout import LATEST_NAME, atomic_write_bytes, step_dir_name
from unigen.orchestrator.runtime.consolidate import is_zero_partitioned  # the one test of "ZeRO step"

log = logging.getLogger("unigen.checkpoint")

DS_LATEST = "latest"
DS_SCRIPTS = ("zero_to_fp32.py", "zero_to_torch.py")


def scripts_for(step_dir: Path) -> dict[str, bytes]:
    """{name: bytes} of the DeepSpeed scripts that belong beside ``step_dir``: the installed DeepSpeed's
    for a ZeRO step, nothing for a stage-0 one (or when DeepSpeed is not installed)."""
    if not is_zero_partitioned(step_dir):
        return {}
    try:
        spec = importlib.util.find_spec("deepspeed")
    except (ImportError, ValueError):
        return {}
    if spec is None or not spec.submodule_search_locations:
        return {}
    utils = Path(list(spec.submodule_search_locations)[0]) / "utils"
    return {name: (utils / name).read_bytes() for name in DS_SCRIPTS if (utils / name).is_file()}


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def publish_local(root: Path, step: int) -> None:
    """After LATEST names committed ``step``: the scripts (ZeRO steps), then ``latest``."""
    try:
        for name, data in scripts_for(root / step_dir_name(step)).items():
            path = root / name
            if not path.is_file() or path.read_bytes() != data:
                atomic_write_bytes(path, data)
                mode = path.stat().st_mode  # runnable as ./zero_to_fp32.py, by whoever may read it (umask)
                path.chmod(mode | (mode & 0o444) >> 2)
        atomic_write_bytes(root / DS_LATEST, step_dir_name(step).encode())
    except OSError as e:
        log.warning("could not write DeepSpeed's latest/zero_to_fp32.py in %s (the checkpoint itself is "
                    "committed): %s", root, e)


def withdraw_local(root: Path, name: str) -> None:
    """Remove ``latest`` when it names the step folder ``name`` that is being moved away or deleted."""
    path = root / DS_LATEST
    try:
        if path.read_text().strip() == name and not _same_file(path, root / LATEST_NAME):
            path.unlink()
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as e:
        log.warning("could not remove %s, which names %s: %s", path, name, e)
