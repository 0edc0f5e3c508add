"""Fixtures of the end-to-end tests: a workspace with the synthetic corpus, and uninterrupted
reference runs that the interrupted ones are compared with (each made once per session)."""
from __future__ import annotations

import pytest

from tests.e2e.cli import SHORT, cli, cli_env, make_workspace, run_dirs


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("ws"))


@pytest.fixture(scope="session")
def reference_run(workspace, tmp_path_factory):
    """smoke-pretrain, 12 steps, checkpoint every 3, 2 ranks, never interrupted: its run folder."""
    root = tmp_path_factory.mktemp("ref-runs")
    cli(workspace, "submit", "recipes/smoke-pretrain.yaml", "--profile", "local", "--wait", *SHORT,
        env=cli_env(root), check=True)
    (run_dir,) = run_dirs(root)
    return run_dir
