"""runbooks/data-preparation.md stays true: every YAML snippet is a valid data section (adapter fields
and options included) and every `unigen data ...` command parses."""
import argparse
import pathlib
import re
import shlex

import pytest
import yaml

from unigen.model.data.cli import add_subcommands
from unigen.model.data.spec import DataSpec
from unigen.model.data.synth.layout import sources_for
from unigen.model.data.tasks import make_adapter

RUNBOOK = pathlib.Path(__file__).resolve().parents[3] / "runbooks" / "data-preparation.md"


def blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", RUNBOOK.read_text(), flags=re.S)


def yaml_sections():
    out = []
    for text in blocks("yaml"):
        doc = yaml.safe_load(text)
        out.append(doc["data"] if "data" in doc else {"sources": doc["sources"]})
    for m in re.finditer(r"`(\{uri: [^`]*\})`", RUNBOOK.read_text()):  # inline one-source snippets
        out.append({"sources": [yaml.safe_load(m.group(1))]})
    return out


@pytest.mark.parametrize("section", yaml_sections(), ids=lambda s: s["sources"][0].get("name", "inline"))
def test_every_yaml_snippet_is_a_valid_data_section(section):
    spec = DataSpec(**section)
    for i, src in enumerate(spec.sources):
        make_adapter(src, spec.image_size, where=f"data.sources[{i}]")


def test_the_synthetic_snippet_matches_the_layout_the_writer_produces():
    synth = next(s for s in yaml_sections() if s["sources"][0]["name"] == "shapes-t2i")
    documented = {s["name"]: s for s in synth["sources"]}
    for src in sources_for("unigen-data/shapes"):
        if src["name"] in documented:
            doc = documented[src["name"]]
            assert doc["uri"] == src["uri"] and doc["format"] == src["format"] and doc["task"] == src["task"]
            assert doc.get("fields", {}) == src.get("fields", {})
            assert doc.get("options", {}) == src.get("options", {})
    assert len(documented) >= 14


def test_every_unigen_data_command_parses():
    parser = argparse.ArgumentParser(prog="unigen data")
    add_subcommands(parser.add_subparsers(dest="data_command", required=True))
    commands = []
    for text in blocks("bash"):
        for line in text.replace("\\\n", " ").splitlines():
            if line.strip().startswith("unigen data"):
                commands.append(shlex.split(line.split("#")[0] if " #" in line else line)[2:])
    assert len(commands) >= 6
    for argv in commands:
        args = parser.parse_args(argv)
        assert callable(args.func)
