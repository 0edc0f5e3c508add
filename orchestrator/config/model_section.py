"""The recipe's ``model:`` section checked against the model package, without torch.

``model: {preset: tiny, num_queries: 64}`` means ``unigen.model.config.get_preset("tiny", num_queries=64)``;
``model: {pretrained: DIR, ...}`` means DIR/config.json with the same overrides. Mapping-valued fields
(backbone_config, dit_config, vae_config) merge into the preset's mapping key by key, so
``model.dit_config.num_layers=4`` changes one number instead of replacing the whole DiT config.
Problems are reported at ``model.<key>``.
"""
from __future__ import annotations

import copy
import re
from typing import Any

from unigen.orchestrator.config.problems import show_value, unknown_key_message
from unigen.orchestrator.config.yamlload import Locations
from unigen.orchestrator.errors import Problem

OWN_KEYS = ("preset", "pretrained")
_FIELD_ERROR = re.compile(r"^\s*-\s*([A-Za-z_][A-Za-z0-9_]*)[=:. ]")


def deep_merge(base: Any, extra: Any) -> Any:
    """``extra`` over ``base``: mappings merge key by key, anything else replaces (copies, never aliases)."""
    if isinstance(base, dict) and isinstance(extra, dict):
        out = copy.deepcopy(base)
        for key, value in extra.items():
            out[key] = deep_merge(out.get(key), value)
        return out
    return copy.deepcopy(extra)


def _config_problems(message: str, field_names: list[str], origin: str, locs: Locations) -> list[Problem]:
    """Split UniGenConfig's multi-line ValueError into one Problem per field it names, each ending in
    ``(origin)``: the preset or pretrained folder the values were merged into."""
    lines = [line for line in message.splitlines() if line.strip()]
    bullets = [(m.group(1), line.strip()[2:].strip()) for line in lines if (m := _FIELD_ERROR.match(line))]
    if not bullets:
        return [locs.problem(("model",), f"{' '.join(line.strip() for line in lines)} ({origin})")]
    return [locs.problem(("model", name) if name in field_names else ("model",), f"{text} ({origin})")
            for name, text in bullets]


def _base_fields(section: dict, locs: Locations) -> tuple[dict | None, str, list[Problem]]:
    """The config fields the overrides apply to: the pretrained folder's, else the preset's."""
    from unigen.model.config import PRESET_NAMES, get_preset, load_pretrained_config, pretrained_config_path

    preset, pretrained = section.get("preset"), section.get("pretrained")
    if pretrained is not None:
        config_path = pretrained_config_path(str(pretrained))  # an export's unigen/config.json, or config.json
        if config_path is None:
            return None, "", [locs.problem(("model", "pretrained"), f"no config.json in {pretrained!r}: give a folder "
                                           "written by UniGenPipeline.save_pretrained or `unigen export`")]
        try:
            return load_pretrained_config(str(pretrained)).to_dict(), f"pretrained {pretrained}", []
        except (ValueError, OSError) as err:
            return None, "", [locs.problem(("model", "pretrained"), f"cannot read {config_path}: {err}".splitlines()[0])]
    if preset is None:
        return None, "", [locs.problem(("model",), f"set model.preset (one of {', '.join(PRESET_NAMES)}) or "
                                       "model.pretrained (a saved model folder)")]
    if preset not in PRESET_NAMES:
        return None, "", [locs.problem(("model", "preset"), f"unknown preset {show_value(preset)}; choose one of "
                                       f"{', '.join(PRESET_NAMES)}")]
    try:
        return get_preset(preset).to_dict(), f"preset {preset}", []
    except ValueError as err:  # a preset the model package lists but cannot build: its bug, shown plainly
        return None, "", [locs.problem(("model", "preset"), str(err).splitlines()[0])]


def check_model_section(section: Any, locs: Locations) -> tuple[dict | None, list[Problem]]:
    """The resolved UniGenConfig as a dict (None on problems), and every problem found."""
    from unigen.model.config import UniGenConfig

    if not isinstance(section, dict):
        return None, [locs.problem(("model",), f"expected a mapping like {{preset: tiny}}, got {show_value(section)}")]
    field_names = [n for n in UniGenConfig.field_names() if n != "preset"]
    overrides = {k: v for k, v in section.items() if k not in OWN_KEYS}
    problems = [locs.problem(("model", key), unknown_key_message(key, list(OWN_KEYS) + field_names, "model"))
                for key in overrides if key not in field_names]
    for key in OWN_KEYS:
        if section.get(key) is not None and not isinstance(section[key], str):
            problems.append(locs.problem(("model", key), f"expected text, got {show_value(section[key])}"))
    if problems:
        return None, problems
    fields, origin, problems = _base_fields(section, locs)
    if fields is None:
        return None, problems
    fields = deep_merge(fields, overrides)
    if section.get("preset") is not None:
        fields["preset"] = section["preset"]
    try:
        config = UniGenConfig.from_dict(fields)
    except (ValueError, TypeError) as err:
        return None, _config_problems(str(err), field_names, origin, locs)
    return config.to_dict(), []
