"""From command-line inputs to typed, checked stages: ``resolve_submission``.

Reads every recipe (with its base) and the profile, applies the overrides, validates everything, and
raises one ``ConfigError`` listing every problem of every file at once, each with its place. Nothing
is written: a submission that fails here leaves no run folder behind.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from pydantic import ValidationError

from unigen.orchestrator.config.checks import profile_problems, recipe_problems
from unigen.orchestrator.config.eval_checks import local_image_paths
from unigen.orchestrator.config.find import find_profile
from unigen.orchestrator.config.inherit import load_document
from unigen.orchestrator.config.init_check import init_from_problems
from unigen.orchestrator.config.model_section import check_model_section
from unigen.orchestrator.config.overrides import Override, apply_override, parse_overrides
from unigen.orchestrator.config.problems import problems_from_validation
from unigen.orchestrator.config.profile import Profile
from unigen.orchestrator.config.recipe import Recipe
from unigen.orchestrator.config.salvage import M, Salvaged, salvage
from unigen.orchestrator.config.secrets_check import literal_secret_problems, url_password_problems
from unigen.orchestrator.config.world import World, batch_problem, readable_world
from unigen.orchestrator.config.yamlload import Locations
from unigen.orchestrator.errors import ConfigError, Problem
from unigen.orchestrator.runs import DEFAULT_RUN_ROOT

RUN_ROOT_ENV = "UNIGEN_RUN_ROOT"
_BRACES = re.compile(r"\{([^{}]*)\}")


def recipe_sha256(recipe: Recipe | dict[str, Any]) -> str:
    """sha256 of the resolved recipe as canonical JSON (sorted keys, no spaces, UTF-8)."""
    data = recipe.model_dump(mode="json") if isinstance(recipe, Recipe) else recipe
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ResolvedStage:
    """One recipe of a submission, validated, with what is derived from it and the profile."""

    index: int  # 1-based position on the command line
    path: Path
    recipe: Recipe
    recipe_sha256: str
    accumulation: int  # gradient accumulation steps = global / (micro x world)
    model_config: dict[str, Any]  # the full UniGenConfig (to_dict) the model section means

    @property
    def starts_from_previous(self) -> bool:
        """True when the launcher must set init_from to the previous stage's run."""
        return self.index > 1 and self.recipe.init_from is None

    def resolved(self) -> dict[str, Any]:
        """The resolved recipe as plain JSON data (what run.json and MLflow record)."""
        return self.recipe.model_dump(mode="json")


@dataclass(frozen=True)
class Submission:
    """Everything ``unigen submit`` needs to create and launch the runs of one command."""

    stages: tuple[ResolvedStage, ...]
    profile: Profile
    profile_path: Path
    world: World
    run_root: Path
    name: str | None = None
    overrides: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def world_size(self) -> int:
        return self.world.size


@dataclass
class _Doc:
    path: Path
    doc: dict | None
    locs: Locations
    problems: list[Problem]


def run_root_for(profile: Profile) -> Path:
    """$UNIGEN_RUN_ROOT, else the profile's storage.run_root, else ./unigen-runs (absolute)."""
    return Path(os.environ.get(RUN_ROOT_ENV) or profile.storage.run_root or DEFAULT_RUN_ROOT).expanduser().resolve()


def _schema(cls: type[M], doc: dict, locs: Locations) -> tuple[Salvaged[M], list[Problem]]:
    """``doc`` validated as a ``cls`` (nothing in doubt), or what of it salvage.py can read and the schema
    problems, each in the user's terms (problems.py)."""
    try:
        return Salvaged(cls.model_validate(doc)), []
    except ValidationError as err:
        return salvage(cls, doc), problems_from_validation(err, cls, locs)


def _validate_recipe(doc: dict, locs: Locations, run_root: Path | None = None
                     ) -> tuple[Recipe | None, Salvaged[Recipe], dict | None, list[Problem]]:
    """The recipe (None when anything is wrong), what of it the later checks can read, the model config,
    and every problem: schema, model section, cross-field and init_from, in one pass (a schema problem
    does not hide a cross-field one; salvage.py says which fields the cross-field checks may then read).
    ``run_root``: where ``init_from: run:<id>`` must be (None: not looked up)."""
    part, problems = _schema(Recipe, doc, locs)
    model_config = None
    if isinstance(doc.get("model"), dict):
        model_config, model_problems = check_model_section(doc["model"], locs)
        problems += model_problems
    problems += recipe_problems(part, model_config, locs)
    if part.readable(("init_from",)):
        problems += init_from_problems(part.value.init_from, locs, run_root)
    return (part.value if not problems else None), _doubting_problems(part, problems), model_config, problems


def _validate_profile(doc: dict, locs: Locations) -> tuple[Profile | None, Salvaged[Profile], list[Problem]]:
    """Like ``_validate_recipe``, for a profile: literal secrets, schema and cross-field problems at once."""
    problems = literal_secret_problems(doc, locs) + url_password_problems(doc, locs)
    reported = {p.path for p in problems}
    part, schema_problems = _schema(Profile, doc, locs)
    problems += [p for p in schema_problems if p.path not in reported]
    problems += profile_problems(part, locs)
    return (part.value if not problems else None), _doubting_problems(part, problems), problems


def _doubting_problems(part: Salvaged, problems: list[Problem]) -> Salvaged:
    """``part`` with every field that has a problem in doubt too: a later check (world size, batch split,
    missing files) does not read a field already reported (gpus_per_node: 0 without ranks_per_node gives no
    world size; an image item of an unknown type is not looked for on disk)."""
    paths = [tuple(int(k) if k.isdigit() else k for k in p.path.split(".")) for p in problems if p.path]
    return part.doubting(*paths)


def _first_local_path(uri: str) -> str | None:
    """The first file a local source pattern names (brace ranges/lists take their first item)."""
    if "://" in uri:
        return None
    first = _BRACES.sub(lambda m: m.group(1).split("..")[0].split(",")[0], uri)
    return min(glob.glob(first), default=first)  # a glob pattern's first match; a plain path stays itself


def _absolute_checkpoint_uri(recipe: Recipe) -> Recipe:
    """A local ``checkpoint.uri`` (a path, no scheme) made absolute from the submit folder: every rank, a
    requeued job, a later ``unigen resume`` and a stage 2 from anywhere then mirror to and read from the
    same folder."""
    uri = recipe.checkpoint.uri
    if not uri or "://" in uri:
        return recipe
    absolute = os.path.abspath(os.path.expanduser(uri))
    if absolute == uri:
        return recipe
    return recipe.model_copy(update={"checkpoint": recipe.checkpoint.model_copy(update={"uri": absolute})})


def _data_notes(part: Salvaged[Recipe], locs: Locations) -> list[Problem]:
    """Local files the run will read that are not here (an error for a local submit, else a warning: a
    cluster may mount them elsewhere). Sources and prompts in doubt are left to their schema problems."""
    notes, recipe = [], part.value
    for section in ("data", "eval"):
        if not part.intact((section, "sources")):
            continue
        for i, src in enumerate(getattr(recipe, section).sources):
            if not part.readable((section, "sources", i)):
                continue
            first = _first_local_path(src.uri)
            if first is not None and not Path(first).exists():
                notes.append(locs.problem((section, "sources", i, "uri"), f"{first} does not exist: write the "
                                          "synthetic corpus with `unigen data synth --out unigen-data/shapes`, or fix "
                                          "the path"))
    prompts = recipe.eval.prompts if part.intact(("eval", "prompts")) else []
    for i, prompt in enumerate(prompts):
        if not part.readable(("eval", "prompts", i)):
            continue
        for path in local_image_paths(prompt):
            if not Path(path).is_file():
                notes.append(locs.problem(("eval", "prompts", i), f"image {path} does not exist (paths are relative "
                                          "to where you submit): fix the path"))
    return notes


def _stage_order_problems(stages: list[tuple[int, _Doc, Salvaged[Recipe]]],
                          purpose: str) -> tuple[list[Problem], list[str]]:
    """``stages``: (position on the command line, document, recipe); fields in doubt are not read."""
    problems, warnings = [], []
    seen_instruct = False
    for i, d, part in stages:
        recipe = part.value
        init_ok, stage = part.readable(("init_from",)), recipe.stage if part.readable(("stage",)) else None
        if i > 1 and init_ok and recipe.init_from is not None:
            problems.append(d.locs.problem(("init_from",), f"stage {i} of this submission starts from stage {i - 1}'s "
                                           "run: remove init_from here, or submit this recipe on its own"))
        if i == 1 and stage == "instruct" and init_ok and recipe.init_from is None:
            problem = d.locs.problem(("init_from",), "not set: an instruct stage starts from a stage-1 model; give "
                                     "init_from=run:<run id> (or a step-<N> checkpoint folder), or submit it after its "
                                     "pretrain recipe")
            if purpose == "submit":
                problems.append(problem)
            else:
                warnings.append(str(problem))
        if stage == "pretrain" and seen_instruct:
            problems.append(d.locs.problem(("stage",), "a pretrain stage cannot follow an instruct stage: list the "
                                           "recipes in training order"))
        seen_instruct |= stage == "instruct"
    return problems, warnings


def _selector_problems(overrides: list[Override], docs: list[_Doc]) -> list[Problem]:
    choices: list[str] = []
    for i, d in enumerate(docs, 1):
        choices.append(str(i))
        for key in ("stage", "name"):
            value = (d.doc or {}).get(key)
            if isinstance(value, str) and value not in choices:
                choices.append(value)
    return [Problem(ov.label, None, "", f"selector {ov.selector!r} matches no recipe of this command; use one of: "
                    f"{', '.join(choices) or '(no recipes given)'}")
            for ov in overrides if ov.selector is not None and ov.selector not in choices]


def _apply(doc: _Doc, overrides: list[Override]) -> None:
    for ov in overrides:
        problem = apply_override(doc.doc, ov, doc.locs)
        if problem is not None:
            doc.problems.append(problem)


def resolve_submission(recipe_paths: Sequence[str | os.PathLike], profile_name: str,
                       overrides: Sequence[str] = (), name: str | None = None, *, purpose: str = "submit",
                       gpu_count: int | None = None) -> Submission:
    """Typed, checked stages for ``unigen submit`` (purpose="submit") or ``unigen validate``
    (purpose="validate": a lone instruct recipe without init_from and missing local data are warnings).

    Raises ``ConfigError`` with every problem found, each naming its file and line or its override.
    """
    assert purpose in ("submit", "validate"), purpose
    paths = [Path(p) for p in recipe_paths]
    parsed, problems = parse_overrides(list(overrides))
    warnings: list[str] = []
    if name is not None and not name.strip():
        problems.append(Problem("--name", None, "", "is empty: give a run name or leave --name out"))

    profile_path, missing = find_profile(profile_name, paths)
    profile = world = run_root = away_from = None
    if missing is not None:
        problems.append(missing)
    else:
        pdoc = _Doc(profile_path, *load_document(profile_path, "profile"))
        if pdoc.doc is not None:
            _apply(pdoc, [ov for ov in parsed if ov.target == "profile"])
            profile, ppart, more = _validate_profile(pdoc.doc, pdoc.locs)
            pdoc.problems += more
            profile = profile if not pdoc.problems else None
            # A profile with problems still gives the world size and run root where their fields are
            # sound, so the recipes' batch and init_from checks run in this same pass.
            world = readable_world(ppart, gpu_count)
            if ppart.readable(("storage", "run_root")) or os.environ.get(RUN_ROOT_ENV):
                run_root = run_root_for(ppart.value)
                if purpose == "validate" and not run_root.is_dir() and ppart.readable(("launcher",)) and \
                        ppart.value.launcher != "local":
                    # Validating a cluster profile away from the cluster: its run root is not here to look in.
                    away_from = run_root
                    run_root = None
            if world is not None and ppart.value.launcher == "local" and ppart.value.local.backend == "nccl" \
                    and not world.gpus:
                pdoc.problems.append(pdoc.locs.problem(("local", "backend"), "nccl needs GPUs and none is "
                                                       "visible: use auto or gloo"))
                world = profile = None
        problems += pdoc.problems

    docs = [_Doc(p, *load_document(p, "recipe")) for p in paths]
    problems += _selector_problems([ov for ov in parsed if ov.target == "recipe"], docs)
    checked: list[tuple[int, _Doc, Recipe | None, Salvaged[Recipe], dict | None]] = []
    for i, d in enumerate(docs, 1):
        if d.doc is None:
            problems += d.problems
            continue
        stage, rname = d.doc.get("stage"), d.doc.get("name")
        _apply(d, [ov for ov in parsed if ov.target == "recipe" and ov.selects(i, stage, rname)])
        # Validate even when an override could not be applied: the user gets every problem in one round.
        # A later stage's init_from is the previous stage's run (set at launch), so only the first is looked up.
        recipe, part, model_config, more = _validate_recipe(d.doc, d.locs, run_root if i == 1 else None)
        if i == 1 and away_from is not None and str(d.doc.get("init_from")).startswith("run:"):
            warnings.append(f"{d.path}: init_from {d.doc['init_from']} is not looked up: the run root {away_from} is "
                            "not on this machine (unigen submit looks it up)")
        d.problems += more
        checked.append((i, d, recipe if not d.problems else None, part, model_config))

    order_problems, order_warnings = _stage_order_problems([(i, d, part) for i, d, _, part, _ in checked], purpose)
    problems += order_problems
    warnings += order_warnings
    resolved: list[ResolvedStage] = []
    for i, d, recipe, part, model_config in checked:
        accumulation = 0
        if world is not None and part.readable(("train", "global_batch_size"), ("train", "micro_batch_size")):
            accumulation, problem = batch_problem(part.value.train, world, d.locs)
            d.problems += [problem] if problem else []
        notes = _data_notes(part, d.locs)
        if notes and purpose == "submit" and profile is not None and profile.launcher == "local":
            d.problems += notes
        else:
            warnings += [str(n) for n in notes]
        problems += d.problems
        if recipe is not None and not d.problems:
            recipe = _absolute_checkpoint_uri(recipe)
            resolved.append(ResolvedStage(len(resolved) + 1, d.path, recipe, recipe_sha256(recipe), accumulation,
                                          model_config))

    _raise_any(problems)
    assert profile is not None and world is not None
    return Submission(tuple(resolved), profile, profile_path, world, run_root_for(profile), name,
                      tuple(overrides), tuple(warnings))


def _raise_any(problems: list[Problem]) -> None:
    """One ``ConfigError`` when there are problems: each once, grouped by source (first seen first), by line
    within a file."""
    if not problems:
        return
    unique = list(dict.fromkeys(problems))
    sources = list(dict.fromkeys(p.source for p in unique))
    raise ConfigError(sorted(unique, key=lambda p: (sources.index(p.source), p.line or 0)))  # stable: ties keep order


def load_recipe(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Recipe:
    """One recipe file (+ its base) with overrides applied and validated on its own (no profile, so no
    accumulation check). Raises ``ConfigError``."""
    parsed, problems = parse_overrides(list(overrides))
    problems += [Problem(ov.label, None, "", "a single recipe takes no selector or profile override")
                 for ov in parsed if ov.selector is not None or ov.target == "profile"]
    d = _Doc(Path(path), *load_document(Path(path), "recipe"))
    recipe = None
    if d.doc is not None:
        _apply(d, [ov for ov in parsed if ov.selector is None and ov.target == "recipe"])
        recipe, _part, _config, more = _validate_recipe(d.doc, d.locs)
        d.problems += more
    problems += d.problems
    _raise_any(problems)
    return recipe


def load_profile(name_or_path: str | os.PathLike, overrides: Sequence[str] = ()) -> Profile:
    """One profile (found like ``--profile``), with ``KEY=VALUE`` overrides of its own keys (no
    ``profile.`` prefix needed). Raises ``ConfigError``."""
    path, missing = find_profile(str(name_or_path), [])
    if missing is not None:
        raise ConfigError([missing])
    texts = [t if t.startswith("profile.") else f"profile.{t}" for t in overrides]
    parsed, problems = parse_overrides(texts)
    d = _Doc(path, *load_document(path, "profile"))
    profile = None
    if d.doc is not None:
        _apply(d, parsed)
        profile, _part, more = _validate_profile(d.doc, d.locs)
        d.problems += more
    problems += d.problems
    _raise_any(problems)
    return profile
