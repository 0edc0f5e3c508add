"""Pretrained weights a submission needs from the hub, the profile's cache they live in, and fetching them.

A recipe's model names its pretrained parts by hub id (``backbone_source``, ``decoder_source``,
``tokenizer_source``) at a pinned revision (``*_revision``, set by the presets). Compute nodes usually
cannot reach the hub, so a profile runs them offline (``env: HF_HUB_OFFLINE: "1"``) from a shared cache
(``env: HF_HOME`` or ``HF_HUB_CACHE``): ``unigen prefetch`` fills that cache once from a machine that can
reach the hub, and ``unigen validate`` / ``submit`` refuse an offline profile whose cache lacks a part,
naming each missing id and the prefetch command, before anything is queued.

The cache is the hub's own layout (``models--org--name/snapshots/<sha>/``), written by huggingface_hub's
``snapshot_download`` (resumable: finished files are kept, a cut transfer is retried from where it
stopped; each file's size is checked against the hub's). Its tree listing (``trees/<sha>.json``) lets the
offline check, without any network, tell a complete snapshot from a partial one.

Torch-free; huggingface_hub is imported only when a hub id is checked or fetched.
"""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from unigen.orchestrator.errors import UserError

# The parts of a diffusers Sana folder that unigen loads (components.py: transformer/ and vae/); the
# repository also holds a Gemma-2 text encoder of ~5 GB that unigen never reads.
DECODER_PATTERNS = ("model_index.json", "transformer/*", "vae/*")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9._-]+$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class HubWeights:
    """One hub repository at one revision, with what unigen needs of it."""

    repo_id: str
    revision: str | None  # None: the hub's main branch
    parts: tuple[str, ...]  # backbone, tokenizer, decoder
    patterns: tuple[str, ...] | None  # files to fetch (fnmatch); None: every file
    stages: tuple[str, ...] = ()  # the recipe files that name it

    @property
    def label(self) -> str:
        return f"{self.repo_id}@{self.revision or 'main'}"


def is_hub_id(source: str | None) -> bool:
    """True when ``from_pretrained(source)`` would read the hub: ``org/name`` that is not a local folder
    (the same rule transformers applies); ``assets://`` sources (in the package) never match ``org/name``."""
    return bool(source and _HUB_ID.match(source)) and not os.path.exists(os.path.expanduser(source))


def hub_weights(model_config: Mapping[str, Any], stage: str = "") -> list[HubWeights]:
    """The hub repositories a resolved model config (``UniGenConfig.to_dict()``) loads from."""
    found = []
    stages = (stage,) if stage else ()
    backbone, backbone_rev = model_config.get("backbone_source"), model_config.get("backbone_revision")
    tokenizer = model_config.get("tokenizer_source")
    if is_hub_id(backbone):
        # With no tokenizer_source the tokenizer and image processor are the backbone folder's files.
        found.append(HubWeights(backbone, backbone_rev, ("backbone",) if tokenizer else ("backbone", "tokenizer"),
                                None, stages))
    if is_hub_id(tokenizer):
        found.append(HubWeights(tokenizer, model_config.get("tokenizer_revision"), ("tokenizer",), None, stages))
    decoder = model_config.get("decoder_source")
    if is_hub_id(decoder):
        found.append(HubWeights(decoder, model_config.get("decoder_revision"), ("decoder",), DECODER_PATTERNS, stages))
    return found


def merge(weights: Iterable[HubWeights]) -> list[HubWeights]:
    """One entry per (repository, revision), its parts, patterns and stages combined, in first-seen order."""
    out: dict[tuple[str, str | None], HubWeights] = {}
    for w in weights:
        key = (w.repo_id, w.revision)
        if key not in out:
            out[key] = w
            continue
        old = out[key]
        patterns = None if old.patterns is None or w.patterns is None else \
            tuple(dict.fromkeys(old.patterns + w.patterns))
        out[key] = HubWeights(w.repo_id, w.revision, tuple(dict.fromkeys(old.parts + w.parts)), patterns,
                              tuple(dict.fromkeys(old.stages + w.stages)))
    return list(out.values())


def submission_weights(sub) -> list[HubWeights]:
    """Every hub repository the stages of a resolved ``Submission`` load from."""
    return merge(w for stage in sub.stages for w in hub_weights(stage.model_config, str(stage.path)))


# ---- where the profile's ranks look -----------------------------------------------------------------
def cache_dir_for(profile) -> tuple[Path, str]:
    """The hub cache the profile's ranks read, and where that comes from (huggingface_hub's precedence:
    HF_HUB_CACHE, then HF_HOME/hub, then XDG_CACHE_HOME/huggingface/hub, then ~/.cache/huggingface/hub)."""
    env = {**os.environ, **profile.env}  # what a rank sees: this shell's, the profile's env on top (as launchers do)
    for name, suffix in (("HF_HUB_CACHE", ()), ("HF_HOME", ("hub",)), ("XDG_CACHE_HOME", ("huggingface", "hub"))):
        if env.get(name):
            origin = "the profile's env" if name in profile.env else "this shell's environment"
            return Path(env[name], *suffix).expanduser().absolute(), f"{name}={env[name]} from {origin}"
    return Path("~/.cache/huggingface/hub").expanduser(), "huggingface_hub's default (no HF_HOME set)"


def env_true(value: str | None) -> bool:
    """A boolean environment value as huggingface_hub reads it (1, ON, YES, TRUE, any case)."""
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _snapshot(cache_dir: Path, w: HubWeights) -> Path | None:
    """The folder of ``w``'s snapshot in ``cache_dir``; None when it is not there."""
    storage = cache_dir / ("models--" + w.repo_id.replace("/", "--"))
    commit = w.revision or "main"
    if not _COMMIT.match(commit):  # a branch or a tag: the commit its cached ref points to
        ref = storage / "refs" / commit
        if not ref.is_file():
            return None
        commit = ref.read_text().strip()
    snapshot = storage / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


def _listing(cache_dir: Path, w: HubWeights, commit: str) -> dict[str, int] | None:
    """path -> size of the files of ``w`` (after its patterns) in the tree listing snapshot_download cached;
    None when no listing is cached (a snapshot fetched by other means, or by an older huggingface_hub)."""
    try:
        from huggingface_hub import get_cached_repo_tree
        from huggingface_hub.errors import CachedRepoTreeNotFoundError
        from huggingface_hub.utils import filter_repo_objects
    except ImportError:
        return None
    try:
        tree = get_cached_repo_tree(w.repo_id, revision=commit, cache_dir=cache_dir)
    except CachedRepoTreeNotFoundError:
        return None
    sizes = {f.path: f.size for f in tree}
    keep = filter_repo_objects(sizes, allow_patterns=list(w.patterns) if w.patterns else None)
    return {path: sizes[path] for path in keep}


def cache_problem(cache_dir: Path, w: HubWeights) -> str | None:
    """Why ``w`` cannot be loaded offline from ``cache_dir`` (None: it can): no snapshot, or a snapshot
    missing files or holding a file of another size than the hub's listing says."""
    snapshot = _snapshot(cache_dir, w)
    if snapshot is None:
        return "not in the cache"
    listing = _listing(cache_dir, w, snapshot.name)
    if listing is None:
        return None if any(p.is_file() for p in snapshot.rglob("*")) else "not in the cache"
    absent = [p for p in listing if not (snapshot / p).is_file()]
    if absent:
        return f"incomplete: {len(absent)} of {len(listing)} file(s) missing ({', '.join(absent[:3])}" + \
            (", ..." if len(absent) > 3 else "") + ")"
    wrong = [f"{p}: {(snapshot / p).stat().st_size} bytes, the hub lists {size}" for p, size in listing.items()
             if size is not None and (snapshot / p).stat().st_size != size]
    if wrong:
        return f"{len(wrong)} file(s) of the wrong size ({'; '.join(wrong[:3])})"
    return None


def prefetch_command(inputs: Iterable[str], profile_arg: str) -> str:
    """The ``unigen prefetch`` line that fills the cache for these command-line inputs: the recipes, and
    the overrides that change what is fetched or where (``model.*``, ``profile.env.*``, also per stage)."""
    def matters(item: str) -> bool:
        if "=" not in item:
            return True  # a recipe file
        key = item.split("=", 1)[0].split(":", 1)[-1]
        return key.startswith(("model.", "profile.env."))

    return shlex.join(["unigen", "prefetch", *[i for i in inputs if matters(i)], "--profile", profile_arg])


def check_offline_weights(sub, inputs: Iterable[str], profile_arg: str) -> list[str]:
    """For ``unigen validate`` / ``submit``: with an offline profile, raise ``UserError`` naming every hub
    repository missing from the profile's cache and the prefetch command to run; returns notes (the
    cache is not on this machine, so nothing could be checked). Online profiles: nothing to check."""
    weights = submission_weights(sub)
    if not weights or not env_true(sub.profile.env.get("HF_HUB_OFFLINE")):
        return []
    cache_dir, origin = cache_dir_for(sub.profile)
    fix = prefetch_command(inputs, profile_arg)
    name = sub.profile.name
    if not cache_dir.is_dir() and sub.profile.launcher != "local":
        # Validating a cluster profile away from the cluster: its shared cache is not mounted here.
        return [f"profile {name} runs offline (env HF_HUB_OFFLINE) from the weights cache {cache_dir} ({origin}), "
                f"which is not on this machine: {', '.join(w.label for w in weights)} not checked. Check where it "
                f"is mounted, and fill it there with: {fix}"]
    problems = [(w, cache_problem(cache_dir, w)) for w in weights]
    missing = [(w, why) for w, why in problems if why]
    if not missing:
        return []
    lines = [f"profile {name} runs offline (env HF_HUB_OFFLINE) and {len(missing)} pretrained part(s) are not "
             f"ready in its weights cache {cache_dir} ({origin}):"]
    lines += [f"  {w.label} ({', '.join(w.parts)} of {', '.join(w.stages)}): {why}" for w, why in missing]
    lines.append(f"fetch them once, from a machine that reaches the hub, with: {fix}")
    raise UserError("\n".join(lines))


# ---- fetching ----------------------------------------------------------------------------------------
@dataclass
class Fetched:
    """What prefetch did for one repository: files fetched now and files that were already there."""

    weights: HubWeights
    commit: str
    fetched: dict[str, int]
    cached: dict[str, int]


class PrefetchError(Exception):
    """A repository could not be fetched (network, authentication, a revision that does not exist)."""


def fetch(w: HubWeights, cache_dir: Path) -> Fetched:
    """Download ``w`` into ``cache_dir`` (only what is not there yet) and verify it: every listed file
    present with the hub's size. Raises ``PrefetchError``."""
    from huggingface_hub import snapshot_download

    snapshot = _snapshot(cache_dir, w)  # what an earlier prefetch left
    before = {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()} if snapshot else set()
    try:
        folder = snapshot_download(w.repo_id, revision=w.revision, cache_dir=cache_dir,
                                   allow_patterns=list(w.patterns) if w.patterns else None)
    except Exception as err:  # noqa: BLE001: every hub/network failure is reported the same way
        first = (str(err).strip().splitlines() or [""])[0]
        raise PrefetchError(f"{w.label}: {type(err).__name__}: {first}") from err
    commit = Path(folder).name
    problem = cache_problem(cache_dir, HubWeights(w.repo_id, commit, w.parts, w.patterns))
    if problem:
        raise PrefetchError(f"{w.label}: downloaded, but the cached snapshot is {problem}")
    listing = _listing(cache_dir, w, commit) or {}
    return Fetched(w, commit, {p: s for p, s in listing.items() if p not in before},
                   {p: s for p, s in listing.items() if p in before})


def human_bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


def prefetch(weights: list[HubWeights], cache_dir: Path, say: Callable[[str], None] = print) -> list[Fetched]:
    """Fetch every repository in turn, printing what each brought; on a failure, raise ``PrefetchError``
    after the repositories before it (their files stay: a rerun fetches only what is still missing)."""
    done = []
    for w in weights:
        say(f"{w.label} ({', '.join(w.parts)}): fetching" +
            (f" {', '.join(w.patterns)}" if w.patterns else " every file"))
        result = fetch(w, cache_dir)
        for path, size in sorted(result.fetched.items()):
            say(f"  fetched  {path}  {human_bytes(size)}")
        if result.cached:
            say(f"  {len(result.cached)} file(s) already cached ({human_bytes(sum(result.cached.values()))})")
        say(f"  ok: snapshot {result.commit}, {len(result.fetched) + len(result.cached)} file(s), sizes verified")
        done.append(result)
    return done
