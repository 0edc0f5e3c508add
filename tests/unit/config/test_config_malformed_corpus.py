"""The malformed-input corpus (malformed/cases.yaml) through the real `unigen` CLI in a subprocess:
each case exits 2 with exactly its expected `error:` lines, no traceback, no secret echoed, and no run
folder (or any other file) left behind."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.unit.config.placeholders import smoke_workspace

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
CASES = yaml.safe_load((HERE / "malformed" / "cases.yaml").read_text())


def unigen_command() -> list[str]:
    """The installed console script (the real entry point), else the module."""
    script = Path(sys.executable).with_name("unigen")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "unigen.orchestrator.cli"]


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A temp folder with copies of recipes/, cluster_profiles/, the corpus, and placeholder files at the
    smoke recipes' local data paths and eval prompt images (so only the intended problem is reported)."""
    work = tmp_path_factory.mktemp("corpus")
    smoke_workspace(work)
    shutil.copytree(HERE / "malformed", work / "malformed")
    return work


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("UNIGEN_RUN_ROOT", "UNIGEN_PROFILES_DIR")}
    env["CUDA_VISIBLE_DEVICES"] = ""  # world size from local.cpu_ranks, whatever the machine has
    return env


def test_corpus_is_large_and_every_file_is_used():
    assert len(CASES) >= 20
    assert len({c["id"] for c in CASES}) == len(CASES), "case ids must be unique"
    used = {Path(a).name for c in CASES for a in c["args"] if a.startswith("malformed/")}
    files = {p.name for p in (HERE / "malformed").glob("*.yaml")} - {"cases.yaml"}
    assert files <= used, f"corpus files no case runs: {sorted(files - used)}"


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_malformed_input_gives_its_one_line_error(case, workdir):
    before = _snapshot(workdir)
    hidden_root = workdir / "unigen-data"
    moved = None
    if case.get("no_data") and hidden_root.exists():
        moved = workdir.parent / f"{workdir.name}-data-aside"
        hidden_root.rename(moved)
    try:
        proc = subprocess.run(unigen_command() + case["args"], cwd=workdir, env=_env(), capture_output=True,
                              text=True, timeout=120)
    finally:
        if moved is not None:
            moved.rename(hidden_root)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert all(line.startswith("error: ") for line in lines), out
    errors = [line[len("error: "):] for line in lines]
    assert len(errors) == len(case["errors"]), "\n".join(errors)
    for got, pattern in zip(errors, case["errors"]):
        assert re.search(pattern, got), f"{got!r} does not match {pattern!r}"
    for secret in case.get("hidden", []):
        assert secret not in out
    assert _snapshot(workdir) == before, "the failed command left files behind"
    assert not (workdir / "unigen-runs").exists()


def test_every_corpus_message_is_explained_in_the_troubleshooting_runbook():
    text = (ROOT / "runbooks" / "troubleshooting.md").read_text()
    missing = sorted({c["doc"] for c in CASES if c["doc"] not in text})
    assert not missing, f"runbooks/troubleshooting.md does not explain: {missing}"
