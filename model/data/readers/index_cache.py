"""A small on-disk cache for per-file indexes (tar member offsets, row-group sizes, line offsets).

Entries are keyed by the file URL plus its size and modification stamp, so a rewritten file gets a
fresh index. Writes go to a temp name then ``os.replace``, so ranks building the same index at once
never read a torn file. The folder: ``data.index_cache`` in the recipe, else $UNIGEN_DATA_CACHE,
else ~/.cache/unigen/data-index (point it at shared storage for big runs: built once, read by all).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from unigen.model.data import fs
from unigen.orchestrator.atomic import atomic_open

VERSION = 1


def cache_folder(configured: str | None) -> Path:
    folder = configured or os.environ.get("UNIGEN_DATA_CACHE") or "~/.cache/unigen/data-index"
    return Path(folder).expanduser()


def fingerprint(url: str, storage_options: dict | None = None) -> str:
    """URL + size + modification stamp (mtime locally, ETag or LastModified on object stores)."""
    fsys, path = fs.filesystem(url, storage_options)
    info = fsys.info(path)
    stamp = info.get("mtime") or info.get("ETag") or info.get("LastModified") or info.get("created")
    return f"{url}|{info.get('size')}|{stamp}"


def cached(kind: str, url: str, build: Callable[[], Any], *, cache_dir: str | None,
           storage_options: dict | None = None, extra: str = "") -> Any:
    """The cached index of ``url`` for ``kind`` (building and storing it on a miss)."""
    key_src = f"v{VERSION}|{kind}|{extra}|{fingerprint(url, storage_options)}"
    digest = hashlib.sha256(key_src.encode()).hexdigest()[:32]
    folder = cache_folder(cache_dir)
    path = folder / kind / f"{digest}.json"
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        pass  # miss or a half-written file from an older crash: rebuild
    value = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "w") as fh:
            json.dump(value, fh, separators=(",", ":"))
    except OSError:
        pass  # a read-only cache folder only costs a rebuild next time
    return value
