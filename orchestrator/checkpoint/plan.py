"""Choose the checkpoint a run resumes from, and explain the choice.

The newest step wins, whichever side holds it; at equal steps the local copy wins (no download).
Every newer candidate that was passed over is listed with its reason. Planning only reads: moving
torn local folders to quarantine and downloading are the manager's job when it acts on a plan.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from unigen.orchestrator.checkpoint.errors import CheckpointError
from unigen.orchestrator.checkpoint.layout import LATEST_NAME, parse_step_dir, step_dir_name
from unigen.orchestrator.checkpoint.verify import LocalStepView, Verdict, verify_step
from unigen.orchestrator.secrets import scrub

RUNBOOK = "runbooks/checkpoint-recovery.md"


@dataclass
class Candidate:
    """One checkpoint folder considered by a plan."""

    step: int
    source: str  # "local" | "remote"
    location: str  # folder path or URL
    ok: bool
    reason: str | None = None
    has_commit: bool = False
    level: str | None = None  # what was verified: "sha256" or "size"
    files: int = 0
    bytes: int = 0
    commit: dict[str, Any] | None = field(default=None, repr=False)


@dataclass
class ResumePlan:
    """Which checkpoint a resume would load, from where, and why the newer ones would not be."""

    local_dir: str
    remote_uri: str | None
    chosen: Candidate | None
    rejected: list[Candidate]
    older: list[tuple[int, str]]  # (step, source) of older candidates, not verified
    latest_pointer: str | None
    remote_error: str | None = None
    error: str | None = None  # set (and raised unless strict=False) when no checkpoint can be used
    quarantined: list[str] = field(default_factory=list)
    remote_committed: list[int] = field(default_factory=list)  # steps with a COMMIT remotely (unverified)

    @property
    def fresh_start(self) -> bool:
        return self.chosen is None and self.error is None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for c in [out["chosen"], *out["rejected"]]:
            if c:
                c.pop("commit", None)
        if self.chosen and self.chosen.commit:
            out["chosen"]["metadata"] = self.chosen.commit.get("metadata")
            out["chosen"]["world_size"] = self.chosen.commit.get("world_size")
        return out

    def describe(self) -> str:
        """The text ``unigen resume RUN --plan`` prints."""
        where = self.local_dir + (f" (remote {self.remote_uri})" if self.remote_uri else " (no remote)")
        lines = [f"checkpoints: {where}"]
        if self.error:
            lines.append(f"cannot resume: {self.error}")
        elif self.chosen is None:
            lines.append("would start fresh: no committed checkpoint exists")
        else:
            c = self.chosen
            how = {"sha256": "sha256 of every file",
                   "size": "sizes (sha256 is checked after the download)" if c.source == "remote"
                   else "sizes only (a quick plan: sha256 not checked)"}[c.level]
            lines.append(f"would load: step-{c.step} from {c.source} {c.location}")
            lines.append(f"  verified: {how}; {c.files} files, {c.bytes / 1e6:.1f} MB")
            commit = c.commit or {}
            lines.append(f"  committed {commit.get('time')} by {commit.get('world_size')} ranks; "
                         f"metadata: {commit.get('metadata')}")
        if self.rejected:
            lines.append("newer checkpoints that would not be used:")
            lines += [f"  step-{c.step:<8} {c.source:<6} {c.reason}  ({c.location})" for c in self.rejected]
        if self.older:
            lines.append("older fallbacks: " + ", ".join(f"step-{s} ({src})" for s, src in self.older))
        if self.latest_pointer:
            lines.append(f"LATEST points at: {self.latest_pointer} (a hint; COMMIT.json decides)")
        if self.remote_error:
            lines.append(f"remote not reachable: {self.remote_error}")
        if self.quarantined:
            lines.append("moved to quarantine: " + ", ".join(self.quarantined))
        return "\n".join(lines)


def scan_local(local_dir: Path) -> dict[int, Path]:
    """{step: folder} of every ``step-<N>`` folder directly under ``local_dir``."""
    if not local_dir.is_dir():
        return {}
    return {step: entry for entry in local_dir.iterdir()
            if (step := parse_step_dir(entry.name)) is not None and entry.is_dir()}


def read_local_latest(local_dir: Path) -> str | None:
    try:
        return (local_dir / LATEST_NAME).read_text().strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def make_plan(local_dir: Path, remote: Any = None, *, level: str = "sha256", strict: bool = True,
              known_bad: tuple[Candidate, ...] = ()) -> ResumePlan:
    """Plan a resume from ``local_dir`` (the run's checkpoints folder) and ``remote`` (a Remote or
    None). ``known_bad``: remote candidates already found bad (a download that failed to verify);
    they are skipped and reported."""
    skip_remote = {c.step for c in known_bad}
    local = scan_local(local_dir)
    listing, remote_error, remote_latest = None, None, None
    if remote is not None:
        try:
            listing = remote.list()
            remote_latest = remote.read_latest()
        except Exception as e:  # any network or auth failure: reported in the plan, decided below
            remote_error = scrub(f"{type(e).__name__}: {e}")
    remote_steps = {s for s in (listing.steps if listing else {}) if s not in skip_remote}
    latest = read_local_latest(local_dir)
    steps = sorted(set(local) | remote_steps, reverse=True)

    chosen, rejected = None, []
    for step in steps:
        sides = [("local", LocalStepView(local[step]), level)] if step in local else []
        if step in remote_steps:
            sides.append(("remote", remote.view(step, listing), "size"))
        for source, view, lvl in sides:
            try:
                v = verify_step(view, step, lvl)
            except Exception as e:  # a network error while reading a remote manifest
                v = Verdict(ok=False, reason=scrub(f"could not be read: {type(e).__name__}: {e}"), has_commit=True)
            cand = Candidate(step, source, view.where, v.ok, v.reason, v.has_commit, v.level if v.ok else None,
                             len(v.files), v.bytes, v.commit)
            if v.ok:
                chosen = cand
                break
            rejected.append(cand)
        if chosen:
            break

    rejected += [c for c in known_bad if chosen is None or c.step > chosen.step]
    older = []
    for step in steps:
        if chosen is not None and step < chosen.step:
            older += [(step, src) for src, have in (("local", local), ("remote", remote_steps)) if step in have]
    rejected.sort(key=lambda c: (-c.step, c.source))
    plan = ResumePlan(str(local_dir), remote.uri if remote is not None else None, chosen, rejected, older,
                      latest or (f"{remote_latest} (remote)" if remote_latest else None), remote_error,
                      remote_committed=listing.committed() if listing else [])
    plan.error = _why_unusable(plan, remote_latest)
    if plan.error and strict:
        raise CheckpointError(plan.error)
    return plan


def _why_unusable(plan: ResumePlan, remote_latest: str | None) -> str | None:
    """An error text when starting fresh would silently drop a run's progress, else None."""
    if plan.chosen is not None:
        return None
    committed = [c for c in plan.rejected if c.has_commit]
    if committed:
        names = "; ".join(f"{step_dir_name(c.step)} ({c.source}): {c.reason}" for c in committed)
        return (f"checkpoints exist but none verifies: {names}. Nothing was moved or deleted; see {RUNBOOK} "
                "to recover by hand (or move the step folders and LATEST away to start from step 0 on purpose)")
    if plan.latest_pointer or remote_latest:
        return (f"LATEST says {plan.latest_pointer or remote_latest} but no committed checkpoint exists "
                f"under {plan.local_dir}{' or ' + plan.remote_uri if plan.remote_uri else ''}; see {RUNBOOK}")
    if plan.remote_error:
        return (f"the remote {plan.remote_uri} cannot be listed ({plan.remote_error}) and no local checkpoint "
                "verifies, so it is unknown whether this run has checkpoints there: retry when the remote "
                "is reachable")
    return None
