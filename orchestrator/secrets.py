"""Keep credentials out of run.json, logs and MLflow.

Two complementary guards:
- ``redact(obj)``: replaces the VALUES of keys that look secret (``secret``, ``token``, ``password``,
  ``*_key``, ...) anywhere in a nested dict/list. Used on recipes and profiles before they are
  recorded anywhere.
- ``scrub(text)`` / ``ScrubFilter``: replaces the literal values of known secrets (read from the
  environment variables named in ``SECRET_ENV_VARS`` and any registered at run time) inside free text,
  so an exception message or a log line that happens to carry one is still clean.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any

REDACTED = "***"

# Key names whose values are secrets. "key" alone or as a suffix ("access_key", "api_key"), but not
# words that merely contain it ("keypoints", "keep_last", "monkey").
_SECRET_KEY = re.compile(
    r"(^|[_.-])(key|secret|token|password|passwd|credential|credentials|auth)s?$"
    r"|secret|password|passwd|token|credential",
    re.IGNORECASE,
)
# Keys that match the pattern but name something public (an env var NAME, not its value).
_PUBLIC_SUFFIXES = ("_env", "_var", "_env_var", "_name")

SECRET_ENV_VARS = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SESSION_TOKEN",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "WANDB_API_KEY",
)

_registered: set[str] = set()


def is_secret_key(key: str) -> bool:
    """True when a mapping key names a secret value."""
    k = str(key)
    return not k.lower().endswith(_PUBLIC_SUFFIXES) and bool(_SECRET_KEY.search(k))


def redact(obj: Any) -> Any:
    """A copy of ``obj`` with every value under a secret-looking key replaced by ``***``."""
    if isinstance(obj, dict):
        return {k: (REDACTED if is_secret_key(k) and v not in (None, "") else redact(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v) for v in obj)
    if isinstance(obj, str):
        return scrub(obj)
    return obj


def register_secret(value: str | None) -> None:
    """Remember a secret value so ``scrub`` removes it from any text (ignored if short/empty)."""
    if value and len(value) >= 6:
        _registered.add(value)


def _known_secrets() -> set[str]:
    from_env = (os.environ.get(name) or "" for name in SECRET_ENV_VARS)
    return _registered | {v for v in from_env if len(v) >= 6}


def scrub(text: str) -> str:
    """Replace every known secret value inside ``text`` with ``***`` (the longest first)."""
    for secret in sorted(_known_secrets(), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def environment_for_record(env: dict[str, str]) -> dict[str, str]:
    """The subset of an environment safe to record: secret-looking names are redacted."""
    return {k: (REDACTED if is_secret_key(k) else scrub(v)) for k, v in env.items()}


class ScrubFilter(logging.Filter):
    """Logging filter that scrubs known secrets from every record's rendered message."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a malformed record: let logging report it as usual
            return True
        clean = scrub(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True
