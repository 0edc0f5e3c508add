"""Secrets are redacted by key and scrubbed by value."""
import logging

from unigen.orchestrator.secrets import ScrubFilter, is_secret_key, redact, register_secret, scrub


def test_secret_keys_are_recognised_and_lookalikes_are_not():
    for k in ("secret_key", "aws_secret_access_key", "token", "api_key", "password", "MLFLOW_TRACKING_TOKEN", "key"):
        assert is_secret_key(k), k
    for k in ("keypoints", "keep_last", "monkey", "key_env", "secret_key_env", "max_tokens_name", "name"):
        assert not is_secret_key(k), k


def test_redact_nested_and_scrub_values(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "AKIAsupersecretvalue")
    obj = {"storage": {"s3": {"secret_key": "abc", "endpoint_url": "http://x"}},
           "note": ["uses AKIAsupersecretvalue here"]}
    out = redact(obj)
    assert out["storage"]["s3"] == {"secret_key": "***", "endpoint_url": "http://x"}
    assert out["note"] == ["uses *** here"]
    assert obj["storage"]["s3"]["secret_key"] == "abc"  # input untouched


def test_log_filter_scrubs_registered_values(caplog):
    register_secret("planted-secret-123")
    log = logging.getLogger("unigen.test.secrets")
    log.addFilter(ScrubFilter())
    with caplog.at_level(logging.INFO, logger="unigen.test.secrets"):
        log.info("connecting with %s", "planted-secret-123")
    assert "planted-secret-123" not in caplog.text and "***" in caplog.text
    assert scrub("x planted-secret-123 y") == "x *** y"
