"""What the tracker records, computed without MLflow: params, git state, data-source inputs, the
environment report. Everything returned here is already redacted (secret-looking keys) and scrubbed
(known secret values), because it ends up in MLflow, in the spool file and maybe in logs.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import socket
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Iterator, Mapping
from urllib.parse import urlsplit

from unigen.orchestrator.secrets import environment_for_record, redact, scrub

if TYPE_CHECKING:  # an annotation only
    from unigen.model.data.spec import DataSpec

# MLflow limits (mlflow/utils/validation.py): longer values are truncated by the client for params
# and tags, longer keys are an error, so keys are shortened here with a hash suffix instead.
MAX_KEY = 250
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")
# Environment variables worth recording (names and redacted values): where and how the job ran.
_ENV_PREFIXES = ("SLURM_", "UNIGEN_", "NCCL_", "CUDA_", "OMP_", "TORCH_", "DS_", "RAY_", "PYTORCH_")
_SOURCE_ROOT = Path(__file__).resolve().parents[2]


def safe_key(key: str) -> str:
    """A key MLflow accepts: bad characters become ``_``; an over-long key keeps its start and gets
    a short hash, so two long keys never collide."""
    clean = _BAD_KEY_CHARS.sub("_", str(key)).strip("/") or "_"
    if len(clean) <= MAX_KEY:
        return clean
    digest = hashlib.sha256(clean.encode()).hexdigest()[:10]
    return f"{clean[:MAX_KEY - 11]}~{digest}"


def _flatten(obj: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf value) pairs; list items are keyed by index, an empty mapping or list is ``{}``/``[]``."""
    if isinstance(obj, Mapping):
        items, empty = list(obj.items()), "{}"
    elif isinstance(obj, (list, tuple)):
        items, empty = list(enumerate(obj)), "[]"
    else:
        yield prefix, obj
        return
    if not items and prefix:
        yield prefix, empty
    for key, value in items:
        yield from _flatten(value, f"{prefix}.{key}" if prefix else str(key))


def _param_text(value: Any) -> str:
    """None and booleans spelled as in the recipe's YAML/JSON (``null``, ``true``), the rest as ``str``."""
    return json.dumps(value) if value is None or isinstance(value, bool) else str(value)


def flatten_params(recipe: Mapping[str, Any]) -> dict[str, str]:
    """The resolved recipe as MLflow params: ``train.lr -> "0.0001"``, ``data.sources.0.uri -> ...``.
    Secret-looking keys are redacted and known secret values scrubbed before flattening."""
    return {safe_key(key): scrub(_param_text(value))[:MAX_PARAM_VALUE]
            for key, value in _flatten(redact(dict(recipe)), "")}


def tag_value(value: Any) -> str:
    """A tag value: text, scrubbed, within MLflow's length limit."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return scrub(text)[:MAX_TAG_VALUE]


def git_state(path: Path = _SOURCE_ROOT) -> tuple[str, str]:
    """(commit, dirty) of the git checkout holding the unigen source: ("unknown", "unknown") when it
    is not a checkout (an installed wheel) or git is missing. Dirty ignores untracked files."""
    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=10,
                             check=True)
        return out.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", "unknown"
    return commit, "true" if dirty else "false"


def _source_type(uri: str) -> str:
    scheme = urlsplit(uri).scheme.lower()
    return scheme if len(scheme) > 1 else "local"  # a Windows drive letter is not a scheme


def _default_name(uri: str) -> str:
    """The last path component of ``uri`` that is not a shard pattern: ``s3://b/cc3m/{0..9}.tar`` ->
    ``cc3m``, ``/data/edits.jsonl`` -> ``edits.jsonl``."""
    parts = [p for p in PurePosixPath(urlsplit(uri).path or uri).parts if p not in ("/", "")]
    while parts and any(c in parts[-1] for c in "{*?["):
        parts.pop()
    return parts[-1] if parts else urlsplit(uri).netloc


def data_sources(data: DataSpec) -> list[dict[str, Any]]:
    """One record per ``data.sources`` entry: name, uri, digest, format, task, weight, source_type.

    The digest (16 hex) identifies the source's DESCRIPTION (uri, format, task, fields, options), not
    its bytes: hashing remote shards at every start would cost a full read. Two runs with the same
    digest read the same data as far as the recipe can tell.
    """
    out = []
    for i, spec in enumerate(data.sources):
        src = redact(spec.model_dump(mode="json"))  # the form run.json records, so digests match across versions
        uri = scrub(str(src["uri"]))
        described = {k: src[k] for k in ("uri", "format", "task", "fields", "options")}
        digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]
        name = src["name"] or _default_name(uri) or f"source-{i}"
        out.append({"name": scrub(str(name)), "uri": uri, "digest": digest, "format": src["format"],
                    "task": src["task"], "weight": spec.weight, "source_type": _source_type(uri)})
    return out


def _packages() -> dict[str, str]:
    from importlib import metadata

    found = {name.lower(): d.version for d in metadata.distributions() if (name := d.metadata.get("Name"))}
    return dict(sorted(found.items()))


def environment_report() -> dict[str, Any]:
    """Where and with what this attempt runs: Python, platform, host, installed package versions and
    the scheduler/runtime environment variables (secret-looking names redacted, values scrubbed)."""
    picked = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
    return {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "packages": _packages(),
        "env": dict(sorted(environment_for_record(picked).items())),
    }


def dump_json(obj: Any) -> str:
    """Pretty JSON of a redacted copy of ``obj``, scrubbed: the form of every JSON artifact."""
    return scrub(json.dumps(redact(obj), indent=2, default=str)) + "\n"


def dump_yaml(obj: Any) -> str:
    """YAML of a redacted copy of ``obj``, scrubbed (recipes and profiles are YAML for people)."""
    import yaml

    return scrub(yaml.safe_dump(redact(obj), sort_keys=False, default_flow_style=False))
