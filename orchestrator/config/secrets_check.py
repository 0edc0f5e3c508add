"""Refuse credentials written into a profile (or a URL) instead of named environment variables.

A profile is copied into run.json, job scripts and MLflow; a secret written in it leaks to all of them.
So a secret-looking key with a literal value, a shell line that assigns one, or a URL carrying a
password is an error whose message says which env var to use instead, and never shows the value.

The key test here is stricter than ``unigen.orchestrator.secrets.is_secret_key`` (which redacts
anything that might be secret): an error must not fire on TOKENIZERS_PARALLELISM or tokenizer_source.
"""
from __future__ import annotations

import re
from typing import Any, Iterator

from unigen.orchestrator.config.yamlload import Locations, PathT
from unigen.orchestrator.errors import Problem

_SECRET_NAME = re.compile(
    r"(^|_)(secret|secrets|password|passwd|token|api_key|apikey|access_key|access_key_id|secret_key|"
    r"secret_access_key|session_token|private_key|credential|credentials|key)$", re.IGNORECASE)
_PUBLIC_SUFFIXES = ("_env", "_var", "_name")
_ASSIGNMENT = re.compile(r"(?:^|[\s;&|])(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(\S*)")
_URL_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@")

# What to name instead, for the storage keys people most often write literally; any other secret-looking
# key under storage.s3 (secret_key, aws_secret_access_key, ...) gets _SECRET_HINT.
_SECRET_HINT = "secret_access_key_env: AWS_SECRET_ACCESS_KEY"
_ENV_HINTS = {**dict.fromkeys(("access_key_id", "access_key", "key", "aws_access_key_id"),
                              "access_key_id_env: AWS_ACCESS_KEY_ID"),
              **dict.fromkeys(("session_token", "aws_session_token"), "session_token_env: AWS_SESSION_TOKEN")}


def is_literal_secret_name(name: str) -> bool:
    """True for names like secret_access_key, HF_TOKEN, WANDB_API_KEY; False for *_env and the like."""
    return not name.lower().endswith(_PUBLIC_SUFFIXES) and bool(_SECRET_NAME.search(name))


def _walk(node: Any, path: PathT = ()) -> Iterator[tuple[PathT, Any, Any]]:
    """(path, key or list index, value) of everything inside ``node``, parents before their contents."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield path + (key,), key, value
        yield from _walk(value, path + (key,))


def _fix_for(path: PathT, key: str) -> str:
    if path[:2] == ("storage", "s3"):
        hint = _ENV_HINTS.get(key.lower(), _SECRET_HINT)
        return f"name the environment variable that holds it instead ({hint})"
    return f"remove it here and export {key} in the shell that runs unigen (the launcher passes the environment on)"


def literal_secret_problems(doc: dict, locs: Locations) -> list[Problem]:
    """Problems for every literal secret in a profile document (keys, shell lines)."""
    out: list[Problem] = []
    for path, key, value in _walk(doc):
        if isinstance(key, str) and is_literal_secret_name(key) and value not in (None, "") \
                and not isinstance(value, (dict, list, bool)):
            out.append(locs.problem(path, "a literal secret in a profile is not allowed (it would be copied into "
                                    f"run.json, job scripts and MLflow): {_fix_for(path, key)}"))
        elif isinstance(value, str) and path[:2] in (("slurm", "setup"), ("slurm", "extra_sbatch")):
            for name, assigned in _ASSIGNMENT.findall(value):
                if is_literal_secret_name(name) and assigned and not assigned.startswith(("$", '"$')):
                    out.append(locs.problem(path, f"this line assigns a literal value to {name}: export {name} in "
                                            "the submitting shell instead (SLURM passes the environment on)"))
    return out


def url_password_problems(doc: Any, locs: Locations) -> list[Problem]:
    """Problems for every ``scheme://user:password@host`` URL anywhere in a document."""
    return [locs.problem(path, "this URL carries a password: remove it from the URL and use the tool's env vars "
                         "(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, AWS_* for S3)")
            for path, _key, value in _walk(doc) if isinstance(value, str) and _URL_PASSWORD.match(value)]
