"""Which MLflow store a run uses, and how URIs are shown."""
import pytest

from tests.unit.tracking.tracking_helpers import make_recipe
from unigen.orchestrator.config.profile import ProfileTracking
from unigen.orchestrator.config.recipe import TrackingSection
from unigen.orchestrator.errors import UserError
from unigen.orchestrator.secrets import scrub
from unigen.orchestrator.tracking.store import (
    artifact_location, default_store_uri, display_uri, resolve_experiment, resolve_tracking_uri, run_tracking_uri)

RECIPE = TrackingSection(experiment="exp-r", tracking_uri="http://recipe:5000")
PROFILE = ProfileTracking(tracking_uri="http://profile:5000")


def test_resolution_order_explicit_env_recipe_profile_default(tmp_path):
    env = {"MLFLOW_TRACKING_URI": "http://env:5000"}
    kw = dict(recipe=RECIPE, profile=PROFILE, run_root=tmp_path)
    assert resolve_tracking_uri("http://arg:5000", env=env, **kw) == "http://arg:5000"
    assert resolve_tracking_uri(None, env=env, **kw) == "http://env:5000"
    assert resolve_tracking_uri(None, env={}, **kw) == "http://recipe:5000"
    assert resolve_tracking_uri(None, env={}, recipe=TrackingSection(), profile=PROFILE,
                                run_root=tmp_path) == "http://profile:5000"
    default = resolve_tracking_uri(None, env={}, recipe=TrackingSection(), profile=ProfileTracking(),
                                   run_root=tmp_path / "runs")
    assert default == f"sqlite:///{(tmp_path / 'runs').resolve()}/mlflow.db" == default_store_uri(tmp_path / "runs")


def test_default_store_keeps_artifacts_next_to_the_database(tmp_path):
    uri = default_store_uri(tmp_path)
    assert artifact_location(uri) == (tmp_path.resolve() / "mlartifacts").as_uri()
    assert artifact_location("http://host:5000") is None


def test_bad_uri_names_its_source_and_the_choices(tmp_path):
    with pytest.raises(UserError, match=r"recipe's tracking.tracking_uri.*scheme 'ftp'.*http://"):
        resolve_tracking_uri(None, env={}, recipe=TrackingSection(tracking_uri="ftp://x/y"), run_root=tmp_path)
    with pytest.raises(UserError, match=r"MLFLOW_TRACKING_URI is 'mlruns'.*path ending in .db"):
        resolve_tracking_uri(None, env={"MLFLOW_TRACKING_URI": "mlruns"}, run_root=tmp_path)
    assert resolve_tracking_uri(None, env={"MLFLOW_TRACKING_URI": str(tmp_path / "x.db")}) == \
        f"sqlite:///{tmp_path.resolve()}/x.db"
    with pytest.raises(UserError, match="--run-root"):
        resolve_tracking_uri(None, env={})


def test_password_in_uri_is_masked_for_display_and_scrubbed_from_text(tmp_path):
    uri = "https://alice:pw-9f8e7d6c5b@mlflow.example.org:8443/"
    assert resolve_tracking_uri(uri, run_root=tmp_path) == uri
    assert display_uri(uri) == "https://alice:***@mlflow.example.org:8443/"
    assert "pw-9f8e7d6c5b" not in scrub(f"failed to reach {uri}")
    assert display_uri("http://h:1") == "http://h:1"


def test_a_run_keeps_the_store_its_ledger_records(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    typed = {"recipe": make_recipe("r", "pretrain", max_steps=1, tracking={"tracking_uri": "http://recipe:5000"}),
             "profile": {"name": "p", "launcher": "local", "tracking": {"tracking_uri": "http://profile:5000"}}}
    record = {"mlflow": {"tracking_uri": "http://first-attempt:5000"}, **typed}
    assert run_tracking_uri(record, None, tmp_path) == "http://first-attempt:5000"
    assert run_tracking_uri(record, "http://arg:1", tmp_path) == "http://arg:1"
    masked = {"mlflow": {"tracking_uri": "http://u:***@h:1"}, **typed}
    assert run_tracking_uri(masked, None, tmp_path) == "http://env:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # then the recorded recipe's store, before the profile's
    assert run_tracking_uri(masked, None, tmp_path) == "http://recipe:5000"


def test_experiment_name(tmp_path):
    assert resolve_experiment(None, RECIPE) == "exp-r"
    assert resolve_experiment("x", RECIPE) == "x"
    assert resolve_experiment(None, TrackingSection()) == "unigen"  # the field's default, not a copy
    with pytest.raises(UserError, match="tracking.experiment"):
        resolve_experiment("bad\nname", TrackingSection())
