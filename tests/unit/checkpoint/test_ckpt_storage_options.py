"""fsspec storage options from a typed profile's ``storage.s3``: credentials read from the environment
variables the profile names, registered with the scrubber, and nothing when the profile names nothing."""
from __future__ import annotations

from unigen.orchestrator.checkpoint.remote import storage_options_from_profile
from unigen.orchestrator.config.profile import Profile
from unigen.orchestrator.secrets import scrub

KEY_ID, SECRET, TOKEN = "AKIA-test-key-id", "s3-secret-0a1b2c3d4e", "session-token-9z8y7x"


def _profile(storage: dict | None = None) -> Profile:
    return Profile.model_validate({"name": "p", "launcher": "local", **({"storage": storage} if storage else {})})


def test_credentials_come_from_the_named_variables_and_are_scrubbed(monkeypatch):
    monkeypatch.setenv("MY_KEY_ID", KEY_ID)
    monkeypatch.setenv("MY_SECRET", SECRET)
    monkeypatch.setenv("MY_TOKEN", TOKEN)
    profile = _profile({"s3": {"endpoint_url": "http://seaweed:8333", "region": "eu-1",
                               "access_key_id_env": "MY_KEY_ID", "secret_access_key_env": "MY_SECRET",
                               "session_token_env": "MY_TOKEN"}})
    assert storage_options_from_profile(profile) == {
        "key": KEY_ID, "secret": SECRET, "token": TOKEN,
        "client_kwargs": {"endpoint_url": "http://seaweed:8333", "region_name": "eu-1"}}
    assert SECRET not in scrub(f"denied for {SECRET}") and TOKEN not in scrub(f"token {TOKEN}")


def test_unset_variables_and_an_absent_section_give_no_options(monkeypatch):
    monkeypatch.delenv("UNSET_SECRET_VAR", raising=False)
    assert storage_options_from_profile(_profile()) is None
    assert storage_options_from_profile(_profile({"s3": {}})) is None
    assert storage_options_from_profile(_profile({"s3": {"secret_access_key_env": "UNSET_SECRET_VAR"}})) is None
    # Only the endpoint: s3fs still takes the credentials from the usual AWS_* variables.
    assert storage_options_from_profile(_profile({"s3": {"endpoint_url": "http://minio:9000"}})) == {
        "client_kwargs": {"endpoint_url": "http://minio:9000"}}
