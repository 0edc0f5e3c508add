"""Params, inputs and environment records: complete, and free of secrets."""
import json

from unigen.model.data.spec import DataSpec, SourceSpec
from unigen.orchestrator.tracking import payload

SECRET = "sk-live-0a1b2c3d4e5f6a7b"


def test_flatten_params_nested_lists_and_scalars():
    recipe = {"name": "r", "train": {"lr": 1e-4, "bf16": True, "clip": None},
              "data": {"sources": [{"uri": "s3://b/x", "weight": 0.5}], "extra": {}, "tags": []}}
    params = payload.flatten_params(recipe)
    assert params == {"name": "r", "train.lr": "0.0001", "train.bf16": "true", "train.clip": "null",
                      "data.sources.0.uri": "s3://b/x", "data.sources.0.weight": "0.5",
                      "data.extra": "{}", "data.tags": "[]"}


def test_params_redact_secret_keys_and_scrub_secret_values(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    recipe = {"checkpoint": {"uri": "s3://b/c", "secret_key": "abcdefgh123", "keep_last": 3},
              "train": {"note": f"debug with {SECRET} inside"}}
    params = payload.flatten_params(recipe)
    assert params["checkpoint.secret_key"] == "***"
    assert params["checkpoint.keep_last"] == "3"
    assert SECRET not in json.dumps(params) and "abcdefgh123" not in json.dumps(params)


def test_keys_are_made_valid_and_long_ones_stay_unique():
    assert payload.safe_key("a b/c:d.e-f_g") == "a b/c:d.e-f_g"
    assert payload.safe_key("bad*key?") == "bad_key_"
    long_a, long_b = "x" * 300 + "a", "x" * 300 + "b"
    assert len(payload.safe_key(long_a)) == payload.MAX_KEY
    assert payload.safe_key(long_a) != payload.safe_key(long_b)


def test_data_sources_have_names_digests_and_types():
    data = DataSpec.model_validate({"sources": [
        {"uri": "s3://data/cc3m/{00000..00099}.tar", "format": "webdataset", "task": "t2i", "weight": 2.0},
        {"uri": "/data/edits.jsonl", "format": "jsonl", "task": "edit", "name": "my-edits"},
        {"uri": "s3://data/cc3m/{00000..00099}.tar", "format": "webdataset", "task": "depth",
         "name": "cc3m-depth"}]})
    a, b, c = payload.data_sources(data)
    assert (a["name"], a["source_type"], a["weight"], a["task"]) == ("cc3m", "s3", 2.0, "t2i")
    # No weight in the recipe: the one SourceSpec.weight defaults to, not a copy of it.
    default_weight = SourceSpec.model_fields["weight"].default
    assert (b["name"], b["source_type"], b["weight"]) == ("my-edits", "local", default_weight)
    assert len(a["digest"]) == 16 and a["digest"] != c["digest"]  # same URI, another task: another input
    # Stable across attempts, each of which rebuilds the spec from run.json.
    assert payload.data_sources(DataSpec.model_validate(data.model_dump(mode="json")))[0]["digest"] == a["digest"]


def test_data_source_records_hold_no_secret_option(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    data = DataSpec.model_validate({"sources": [
        {"uri": f"s3://data/{SECRET}/x.jsonl", "format": "jsonl", "task": "t2i",
         "options": {"api_token": "tok-123456"}}]})
    assert SECRET not in json.dumps(payload.data_sources(data))


def test_environment_report_lists_packages_and_redacts_env(monkeypatch):
    monkeypatch.setenv("UNIGEN_S3_SECRET_KEY", SECRET)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    report = payload.environment_report()
    assert report["packages"]["mlflow"].startswith("3.")
    assert report["env"]["SLURM_JOB_ID"] == "4242"
    assert report["env"]["UNIGEN_S3_SECRET_KEY"] == "***"
    assert SECRET not in payload.dump_json(report)


def test_git_state_of_the_source_checkout(tmp_path):
    commit, dirty = payload.git_state()
    assert len(commit) == 40 and dirty in ("true", "false")
    assert payload.git_state(tmp_path) == ("unknown", "unknown")
