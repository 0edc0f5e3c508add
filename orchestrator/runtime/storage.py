"""fsspec storage options for checkpoint URIs, from the profile's ``storage`` section.

Profiles name the environment variables that hold credentials (``access_key_id_env``,
``secret_access_key_env``, ``session_token_env``), never the
credentials themselves; the values are read here, registered with the secret scrubber, and passed to
fsspec only. Without a storage section, s3fs falls back to the usual AWS_* variables.
"""
from __future__ import annotations

import os
from typing import Any

from unigen.orchestrator.secrets import register_secret


def storage_options_from_profile(profile: dict[str, Any]) -> dict[str, Any] | None:
    s3 = ((profile.get("storage") or {}).get("s3")) or {}
    if not s3:
        return None
    options: dict[str, Any] = {}
    client_kwargs: dict[str, Any] = {}
    if s3.get("endpoint_url"):
        client_kwargs["endpoint_url"] = s3["endpoint_url"]
    if s3.get("region"):
        client_kwargs["region_name"] = s3["region"]
    for field, option in (("access_key_id_env", "key"), ("secret_access_key_env", "secret"),
                          ("session_token_env", "token")):
        name = s3.get(field)
        if name and os.environ.get(name):
            register_secret(os.environ[name])
            options[option] = os.environ[name]
    if client_kwargs:
        options["client_kwargs"] = client_kwargs
    return options or None
