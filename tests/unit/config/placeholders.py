"""A workspace for config tests: copies of the shipped recipes and profiles, and empty placeholder files
where the smoke recipes read data and eval prompt images (so a test sees only the problem it plants)."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
_BRACES = re.compile(r"\{([^{}]*)\}")


def smoke_workspace(folder: Path) -> Path:
    """Fill ``folder`` with recipes/, cluster_profiles/ and the smoke recipes' placeholder inputs."""
    for name in ("recipes", "cluster_profiles"):
        shutil.copytree(ROOT / name, folder / name)
    for recipe in (folder / "recipes").glob("smoke-*.yaml"):
        doc = yaml.safe_load(recipe.read_text())
        evaluation = doc.get("eval") or {}
        for src in doc["data"]["sources"] + (evaluation.get("sources") or []):
            # The first shard of a brace range ({00000..00003}) or list ({a,b}) stands for all of them.
            first = folder / _BRACES.sub(lambda m: m.group(1).split("..")[0].split(",")[0], src["uri"])
            if first.suffix:
                first.parent.mkdir(parents=True, exist_ok=True)
                first.touch()
            else:
                first.mkdir(parents=True, exist_ok=True)
        for prompt in evaluation.get("prompts") or []:
            for item in (prompt[0]["content"] if isinstance(prompt, list) else []):
                if item.get("type") == "image":
                    (folder / item["image"]).parent.mkdir(parents=True, exist_ok=True)
                    (folder / item["image"]).touch()
    return folder
