"""Fixtures of the data tests: one synthetic corpus per session (written by the real writer), and a
per-session index cache so tests never touch ~/.cache."""
import pytest

from unigen.model.data.synth.writers import write_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    manifest = write_corpus(root, seed=0)
    return root, manifest


@pytest.fixture(scope="session")
def _cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("index-cache")


@pytest.fixture(autouse=True)
def _isolated_index_cache(_cache_dir, monkeypatch):
    monkeypatch.setenv("UNIGEN_DATA_CACHE", str(_cache_dir))
