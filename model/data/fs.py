"""fsspec helpers: brace-expanded shard lists, URL joins, and byte-range reads with retries.

Every read goes through ``read_bytes`` so the retry policy and the "unreachable after retries" error are
in one place. Paths stay strings (``s3://bucket/x``, ``/local/x``, ``file:///x``) so records can carry
them between processes.
"""
from __future__ import annotations

import functools
import json
import logging
import posixpath
import re
import time
from typing import Any

log = logging.getLogger("unigen.data")

_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_LIST = re.compile(r"\{([^{}]*,[^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """Expand ``{00000..00003}`` (zero padding kept) and ``{a,b}`` groups, left to right.

    >>> expand_braces("s3://b/{000..002}.tar")
    ['s3://b/000.tar', 's3://b/001.tar', 's3://b/002.tar']
    """
    m = _RANGE.search(pattern)
    lm = _LIST.search(pattern)
    if lm and (m is None or lm.start() < m.start()):
        head, tail = pattern[:lm.start()], pattern[lm.end():]
        return [x for alt in lm.group(1).split(",") for x in expand_braces(head + alt + tail)]
    if m is None:
        return [pattern]
    lo, hi = m.group(1), m.group(2)
    if int(hi) < int(lo):
        raise ValueError(f"brace range {m.group(0)} in {pattern!r} goes backwards; write {{{hi}..{lo}}}")
    width = len(lo) if lo.startswith("0") or len(lo) == len(hi) else 0
    head, tail = pattern[:m.start()], pattern[m.end():]
    return [x for i in range(int(lo), int(hi) + 1) for x in expand_braces(f"{head}{i:0{width}d}{tail}")]


@functools.lru_cache(maxsize=32)
def _fs_for(protocol: str, options_json: str) -> Any:
    import fsspec
    return fsspec.filesystem(protocol, **json.loads(options_json))


def filesystem(url: str, storage_options: dict | None = None) -> tuple[Any, str]:
    """(filesystem, path inside it) for a URL; filesystems are cached per protocol and options."""
    from fsspec.core import split_protocol
    protocol, _ = split_protocol(url)
    protocol = protocol or "file"
    fs = _fs_for(protocol, json.dumps(storage_options or {}, sort_keys=True))
    return fs, fs._strip_protocol(url)


def expand_uri(uri: str, storage_options: dict | None = None) -> list[str]:
    """Every file a source URI names: brace ranges expanded, globs listed (sorted), a folder listed
    (its files, sorted). Returns full URLs with the protocol kept."""
    out: list[str] = []
    for pat in expand_braces(uri):
        fs, path = filesystem(pat, storage_options)
        proto = _protocol_prefix(pat)
        if any(c in path for c in "*?["):
            out.extend(proto + p for p in sorted(fs.glob(path)))
        elif fs.isdir(path):
            out.extend(proto + p for p in sorted(fs.find(path)))
        else:
            out.append(pat)
    return out


def _protocol_prefix(url: str) -> str:
    return url[: url.index("://") + 3] if "://" in url else ""


def join(root: str, rel: str) -> str:
    """``rel`` resolved against ``root`` unless it is already absolute or a URL."""
    if "://" in rel or rel.startswith("/"):
        return rel
    return posixpath.join(root.rstrip("/"), rel) if root else rel


def dirname(url: str) -> str:
    return url.rsplit("/", 1)[0] if "/" in url else ""


def read_bytes(url: str, start: int | None = None, end: int | None = None, *, retries: int = 3,
               storage_options: dict | None = None) -> bytes:
    """Bytes [start, end) of ``url``. Missing files fail at once; other I/O errors are retried with
    backoff (0.2 s, 0.4 s, ...), then re-raised as OSError naming the URL and the attempts."""
    fs, path = filesystem(url, storage_options)
    delay = 0.2
    for attempt in range(retries + 1):
        try:
            return fs.cat_file(path, start=start, end=end)
        except FileNotFoundError:
            raise
        except (OSError, TimeoutError, ConnectionError) as exc:  # network blips, throttling
            if attempt == retries:
                raise OSError(f"{url}: unreachable after {retries + 1} attempts ({exc})") from exc
            log.warning("read %s failed (%s); retry %d/%d in %.1fs", url, exc, attempt + 1, retries, delay)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def file_size(url: str, storage_options: dict | None = None) -> int:
    fs, path = filesystem(url, storage_options)
    return int(fs.size(path))
