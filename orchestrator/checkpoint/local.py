"""Housekeeping of the local checkpoints folder: LATEST (and DeepSpeed's ``latest``), quarantine,
deletion in the background."""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import secrets
import shutil
import threading
from pathlib import Path

from unigen.orchestrator.atomic import fsync_dir
from unigen.orchestrator.checkpoint.deepspeed_tools import publish_local, withdraw_local
from unigen.orchestrator.checkpoint.layout import (
    COMMIT_NAME,
    INCOMING_PREFIX,
    LATEST_NAME,
    QUARANTINE_DIR,
    TRASH_PREFIX,
    atomic_write_bytes,
    step_dir_name,
)
from unigen.orchestrator.checkpoint.plan import scan_local

REASON_FILE = "QUARANTINE_REASON.txt"


class LocalStore:
    """Rank 0's view of ``<run_dir>/checkpoints``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._purgers: list[threading.Thread] = []

    def step_dir(self, step: int) -> Path:
        return self.root / step_dir_name(step)

    def committed_steps(self) -> list[int]:
        """Steps whose folder has a COMMIT.json (existence only: cheap, for retention)."""
        return sorted(s for s, p in scan_local(self.root).items() if (p / COMMIT_NAME).is_file())

    def write_latest(self, step: int) -> None:
        """Point LATEST, then DeepSpeed's ``latest``, at ``step``; only ever called for a committed step."""
        atomic_write_bytes(self.root / LATEST_NAME, step_dir_name(step).encode())
        publish_local(self.root, step)

    def quarantine(self, path: Path, reason: str) -> Path:
        """Move a torn or corrupt folder to ``quarantine/<name>.<UTC time>`` with a reason file."""
        withdraw_local(self.root, path.name)  # DeepSpeed's `latest` must never name a missing step
        qdir = self.root / QUARANTINE_DIR
        qdir.mkdir(exist_ok=True)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target = qdir / f"{path.name}.{stamp}"
        while target.exists():
            target = qdir / f"{path.name}.{stamp}.{secrets.token_hex(2)}"
        os.replace(path, target)
        fsync_dir(self.root)
        with contextlib.suppress(OSError):  # the move is what matters; the note is a courtesy
            (target / REASON_FILE).write_text(reason + "\n")
        return target

    def discard(self, path: Path) -> None:
        """Delete a folder without making the caller wait: an instant rename out of sight, then
        ``rmtree`` in a background thread (a multi-GB checkpoint takes seconds to delete)."""
        withdraw_local(self.root, path.name)
        trash = self.root / f"{TRASH_PREFIX}{path.name}-{secrets.token_hex(4)}"
        os.replace(path, trash)
        self._purge([trash])

    def purge_leftovers(self) -> None:
        """Remove downloads and deletions a previous process left half done."""
        if self.root.is_dir():
            self._purge([p for p in self.root.iterdir() if p.name.startswith((INCOMING_PREFIX, TRASH_PREFIX))])

    def _purge(self, paths: list[Path]) -> None:
        if not paths:
            return
        t = threading.Thread(target=lambda: [shutil.rmtree(p, ignore_errors=True) for p in paths],
                             name="ckpt-purge", daemon=True)
        t.start()
        self._purgers = [p for p in self._purgers if p.is_alive()] + [t]

    def wait_purges(self, timeout: float = 60.0) -> None:
        for t in self._purgers:
            t.join(timeout)
