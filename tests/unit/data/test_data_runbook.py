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


def synthetic_commands():
    """The `unigen data ...` lines of the bash block the runbook marks as runnable on the synthetic corpus."""
    block = next(b for b in blocks("bash") if b.startswith("# on the synthetic corpus"))
    return [shlex.split(line)[2:] for line in block.splitlines() if line.startswith("unigen data")]


def test_the_synthetic_corpus_commands_run_as_written(corpus, tmp_path, monkeypatch, capsys):
    from tests.unit.data.test_data_cli import cli

    root, _ = corpus
    (tmp_path / "unigen-data").mkdir()
    (tmp_path / "unigen-data" / "shapes").symlink_to(root)
    monkeypatch.chdir(tmp_path)
    commands = synthetic_commands()
    assert len(commands) >= 4 and {c[0] for c in commands} == {"check", "preview"}
    for argv in commands:
        assert cli(*argv) == 0, (argv, capsys.readouterr())
        if argv[0] == "preview":
            from PIL import Image
            out = tmp_path / argv[argv.index("--out") + 1]
            sheet = Image.open(out)
            assert sheet.width > 300 and sheet.height > 128
    assert "OK" in capsys.readouterr().out


# Every public dataset issue 3 names, and a word its runbook section must contain.
DATASETS = ("LAION-400M", "LAION-2B", "COYO-700M", "CC3M", "CC12M", "InstructPix2Pix", "Interleaved", "MagicBrush",
            "SEED-Data-Edit", "OmniEdit", "MetaQuery-Instruct", "NYUv2", "ScanNet", "KITTI", "Sintel",
            "COCO keypoints", "segmentation", "RefCOCO")


def sections():
    """(heading, body) of every ### section."""
    parts = re.split(r"^### ", RUNBOOK.read_text(), flags=re.M)[1:]
    return [(p.split("\n", 1)[0], p.split("\n", 1)[1]) for p in parts]


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_public_dataset_of_issue_3_has_a_section_with_a_recipe_snippet(dataset):
    found = [(h, b) for h, b in sections() if dataset.lower() in h.lower()]
    assert found, f"runbooks/data-preparation.md: no ### section names {dataset}"
    heading, body = found[0]
    assert "```yaml" in body or "`{uri:" in body, f"section {heading!r} has no recipe snippet"
    what_to_get = ("download", "img2dataset", "write a jsonl", "hf ", "unpack", ".json", "parquet")
    assert any(w in body.lower() for w in what_to_get), f"section {heading!r} does not say what to download"
