"""Verify one checkpoint folder, local or remote, against its COMMIT and manifests.

Checks, cheapest first: COMMIT.json exists and parses; it names one manifest per rank and each
manifest's size and sha256 match; every path in a manifest is a safe relative path; every listed file
exists with the listed size; then (level "sha256") every file's sha256. A remote folder is checked to
the size level here (hashing it means downloading it); a download is hashed in full before use.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from unigen.orchestrator.checkpoint.layout import (
    COMMIT_NAME,
    FORMAT,
    UnsafePath,
    check_relpath,
    manifest_name,
    resolve_inside,
)
from unigen.orchestrator.checkpoint.manifest import hash_files

LEVELS = ("size", "sha256")


class StepView(Protocol):
    """Read access to one step folder wherever it lives."""

    where: str

    def size(self, rel: str) -> int | None:
        """Size in bytes, or None when the file does not exist."""

    def read_bytes(self, rel: str) -> bytes: ...

    def sha256_many(self, rels: list[str]) -> list[str] | None:
        """sha256 of each file, or None when this view cannot hash cheaply (remote)."""


class LocalStepView:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.where = str(self.path)

    def size(self, rel: str) -> int | None:
        p = resolve_inside(self.path, rel)
        return p.stat().st_size if p.is_file() else None

    def read_bytes(self, rel: str) -> bytes:
        return resolve_inside(self.path, rel).read_bytes()

    def sha256_many(self, rels: list[str]) -> list[str]:
        return [digest for _, digest in hash_files([resolve_inside(self.path, r) for r in rels])]


@dataclass
class Verdict:
    """The outcome of verifying one step folder."""

    ok: bool
    reason: str | None = None
    has_commit: bool = False
    commit: dict[str, Any] | None = None
    files: list[tuple[str, int, str]] = field(default_factory=list)  # (path, size, sha256) over all ranks
    level: str = "sha256"

    @property
    def bytes(self) -> int:
        return sum(size for _, size, _ in self.files)


def _fail(reason: str, *, has_commit: bool = True, commit: dict | None = None) -> Verdict:
    return Verdict(ok=False, reason=reason, has_commit=has_commit, commit=commit)


def _check_commit_record(commit: Any, step: int) -> str | None:
    if not isinstance(commit, dict) or commit.get("format") != FORMAT:
        return f"COMMIT.json is not a {FORMAT} record"
    if commit.get("step") != step:
        return f"COMMIT.json says step {commit.get('step')!r} but the folder is step-{step}"
    ws = commit.get("world_size")
    if not isinstance(ws, int) or ws < 1:
        return f"COMMIT.json has world_size {ws!r}"
    manifests = commit.get("manifests")
    expected = [manifest_name(r) for r in range(ws)]
    if not isinstance(manifests, list) or [m.get("path") if isinstance(m, dict) else None for m in manifests] \
            != expected:
        return f"COMMIT.json must list {', '.join(expected)} in order"
    return None


def _read_manifests(view: StepView, commit: dict, step: int) -> tuple[list[tuple[str, int, str, str]], str | None]:
    """All (path, size, sha256, manifest name) entries, or a rejection reason."""
    entries: list[tuple[str, int, str, str]] = []
    for rank, rec in enumerate(commit["manifests"]):
        name = rec["path"]
        size = view.size(name)
        if size is None:
            return [], f"{name} is missing"
        if size != rec.get("size"):
            return [], f"{name} is {size} bytes, COMMIT.json says {rec.get('size')}"
        data = view.read_bytes(name)
        if hashlib.sha256(data).hexdigest() != rec.get("sha256"):
            return [], f"{name} sha256 mismatch (changed after the commit)"
        try:
            manifest = json.loads(data)
        except ValueError as e:
            return [], f"{name} is not JSON ({e})"
        if not isinstance(manifest, dict) or manifest.get("step") != step or manifest.get("rank") != rank \
                or not isinstance(manifest.get("files"), list):
            return [], f"{name} does not describe rank {rank} of step {step}"
        for item in manifest["files"]:
            if not isinstance(item, dict):
                return [], f"{name} has a malformed entry {item!r}"
            try:
                rel = check_relpath(item.get("path"))
            except UnsafePath as e:
                return [], f"{name}: {e}"
            if not isinstance(item.get("size"), int) or not isinstance(item.get("sha256"), str):
                return [], f"{name}: entry {rel!r} lacks an integer size or a sha256"
            entries.append((rel, item["size"], item["sha256"], name))
    return entries, None


def verify_step(view: StepView, step: int, level: str = "sha256") -> Verdict:
    """Verify the step folder behind ``view``; never raises for a bad checkpoint, returns why."""
    if level not in LEVELS:
        raise ValueError(f"verify level {level!r}: choose one of {LEVELS}")
    if view.size(COMMIT_NAME) is None:
        return _fail("no COMMIT.json (the save or upload never finished)", has_commit=False)
    try:
        commit = json.loads(view.read_bytes(COMMIT_NAME))
    except ValueError as e:
        return _fail(f"COMMIT.json is not JSON ({e})")
    problem = _check_commit_record(commit, step)
    if problem:
        return _fail(problem)
    try:
        entries, problem = _read_manifests(view, commit, step)
    except UnsafePath as e:
        problem = str(e)
    if problem:
        return _fail(problem, commit=commit)

    unique: dict[str, tuple[int, str, str]] = {}
    for rel, size, digest, owner in entries:
        seen = unique.setdefault(rel, (size, digest, owner))
        if seen[:2] != (size, digest):
            return _fail(f"{rel} is listed by {seen[2]} and {owner} with different contents", commit=commit)
    for rel, (size, _, owner) in unique.items():
        try:
            actual = view.size(rel)
        except UnsafePath as e:
            return _fail(f"{owner}: {e}", commit=commit)
        if actual is None:
            return _fail(f"missing file {rel} (listed in {owner})", commit=commit)
        if actual != size:
            return _fail(f"{rel} is {actual} bytes, {owner} says {size}", commit=commit)

    rels = sorted(unique)
    digests = view.sha256_many(rels) if level == "sha256" else None  # None also where a view cannot hash
    for rel, got in zip(rels, digests or []):
        if got != unique[rel][1]:
            return _fail(f"{rel} sha256 mismatch (corrupt or changed after the commit; listed in "
                         f"{unique[rel][2]})", commit=commit)
    files = [(rel, unique[rel][0], unique[rel][1]) for rel in rels]
    return Verdict(ok=True, has_commit=True, commit=commit, files=files,
                   level="size" if digests is None else "sha256")
