"""``--profile NAME``: a path if it is one, else ``NAME.yaml`` in the profile folders, in this order:
./cluster_profiles, $UNIGEN_PROFILES_DIR, and ../cluster_profiles next to each recipe's folder."""
from __future__ import annotations

import os
from pathlib import Path

from unigen.orchestrator.errors import Problem

PROFILES_ENV = "UNIGEN_PROFILES_DIR"


def profile_dirs(recipe_paths: list[Path]) -> list[Path]:
    """The folders searched for a profile name, in order, without repeats."""
    dirs = [Path("cluster_profiles")]
    if os.environ.get(PROFILES_ENV):
        dirs.append(Path(os.environ[PROFILES_ENV]))
    dirs += [Path(p).parent.parent / "cluster_profiles" for p in recipe_paths]
    unique: dict[Path, Path] = {}
    for d in dirs:
        unique.setdefault(d.resolve(), d)
    return list(unique.values())


def find_profile(name: str, recipe_paths: list[Path]) -> tuple[Path | None, Problem | None]:
    """The profile file ``name`` means, or a problem listing every place searched."""
    as_path = Path(name).expanduser()
    if as_path.is_file():
        return as_path, None
    if as_path.exists():
        return None, Problem(f"--profile {name}", None, "", "is a folder: give a profile name or a .yaml file")
    file_name = name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"
    if "/" in name:
        return None, Problem(f"--profile {name}", None, "", "file not found (a name without '/' is looked up in "
                             "the profile folders)")
    dirs = profile_dirs(recipe_paths)
    for d in dirs:
        if (d / file_name).is_file():
            return d / file_name, None
    searched = ", ".join(str(d / file_name) for d in dirs)
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})
    choices = f"; profiles there: {', '.join(known)}" if known else ""
    return None, Problem(f"--profile {name}", None, "", f"no such profile file; searched {searched} (set "
                         f"{PROFILES_ENV} to add a folder){choices}")
