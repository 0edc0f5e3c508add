"""``unigen data synth|check|preview`` through an argparse parser built by ``add_subcommands``."""
import argparse
import hashlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.unit.data.test_data_bad_records import write_bad_corpus
from unigen.model.data.cli import add_subcommands


def data_parser() -> argparse.ArgumentParser:
    """What the main CLI does for ``unigen data``: a parser whose subparsers we fill."""
    parser = argparse.ArgumentParser(prog="unigen data")
    add_subcommands(parser.add_subparsers(dest="data_command", required=True))
    return parser


def cli(*argv) -> int:
    args = data_parser().parse_args([str(a) for a in argv])
    return args.func(args)


def tree_digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_synth_is_deterministic_from_the_seed_and_prints_a_summary(tmp_path, capsys):
    assert cli("synth", "--out", tmp_path / "a", "--seed", 3) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'a'}/t2i/{{00000..00003}}.tar" in out and "magicbrush" in out and "turns 24" in out
    assert cli("synth", "--out", tmp_path / "b", "--seed", 3) == 0
    assert cli("synth", "--out", tmp_path / "c", "--seed", 4) == 0
    a, b, c = (tree_digest(tmp_path / x) for x in "abc")
    # manifest.json holds absolute paths: compare everything else
    for x in "abc":
        (tmp_path / x / "manifest.json").unlink()
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b") != tree_digest(tmp_path / "c")
    assert len({a, b, c}) == 3


def test_check_reports_counts_schema_and_first_conversation(corpus, capsys):
    root, _ = corpus
    assert cli("check", f"{root}/edit/magicbrush", "--task", "edit", "--image-size", 64) == 0
    out = capsys.readouterr().out
    assert "format parquet, task edit, 8 sessions" in out
    assert "checked 8 sessions: 8 ok, 0 bad (0.0%)" in out
    assert "fields of the first good record: rows" in out
    assert out.count("assistant: [image_gen 64x64]") == 3 and out.rstrip().endswith("OK")


def test_check_fails_on_a_bad_corpus_listing_keys(tmp_path, capsys):
    write_bad_corpus(tmp_path / "bad")
    code = cli("check", f"{tmp_path}/bad/{{00000..00004}}.tar", "--task", "t2i", "--limit", 0)
    captured = capsys.readouterr()
    assert code == 1
    assert "bad 00001.tar/b001: image: undecodable image" in captured.out
    assert "bad 00003.tar/__unreadable__: shard unreadable" in captured.out
    assert "FAIL: bad fraction" in captured.err


def test_user_mistakes_exit_2_with_one_error_line(corpus, capsys):
    root, _ = corpus
    assert cli("check", f"{root}/t2i/00000.tar", "--task", "t2i", "--option", "nonsense=1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: source.options: unknown option(s) ['nonsense']")
    assert cli("check", f"{root}/README", "--task", "t2i") == 2
    assert "pass --format" in capsys.readouterr().err
    assert cli("check", f"{root}/t2i/00000.tar", "--task", "t2i", "--field", "caption") == 2
    assert "--field 'caption': expected KEY=VALUE" in capsys.readouterr().err


def test_preview_writes_a_contact_sheet(corpus, tmp_path, capsys):
    root, _ = corpus
    out = tmp_path / "grid.png"
    assert cli("preview", f"{root}/edit/magicbrush", "--task", "edit", "--count", 3, "--out", out) == 0
    assert "wrote" in capsys.readouterr().out
    sheet = np.asarray(Image.open(out).convert("RGB"))
    from unigen.model.data.commands.preview import PAD, TEXT_W, THUMB
    assert sheet.shape[1] == PAD + 6 * (THUMB + PAD) + TEXT_W + PAD  # 3 turns: 3 inputs + 3 targets per row
    assert sheet.shape[0] >= 3 * THUMB
    magenta = ((sheet[..., 0] == 200) & (sheet[..., 1] == 0) & (sheet[..., 2] == 120)).sum()
    assert magenta > 3 * 3 * THUMB  # target frames drawn
    assert sheet.std() > 20


def test_cli_module_and_parsers_import_no_heavy_packages():
    code = ("import argparse, sys\n"
            "from unigen.model.data.cli import add_subcommands\n"
            "p = argparse.ArgumentParser(); add_subcommands(p.add_subparsers())\n"
            "p.parse_args(['check', 'x.tar', '--task', 't2i'])\n"
            "print(','.join(m for m in ('torch', 'transformers', 'diffusers', 'pyarrow', 'PIL', 'numpy') "
            "if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("sub", ["synth", "check", "preview", "encode", "label-segmentation"])
def test_every_subcommand_has_help(sub, capsys):
    with pytest.raises(SystemExit) as exc:
        cli(sub, "--help")
    assert exc.value.code == 0
    assert "usage: unigen data " + sub in capsys.readouterr().out


def test_the_real_unigen_cli_dispatches_data_commands(corpus):
    root, _ = corpus
    out = subprocess.run([sys.executable, "-m", "unigen.orchestrator.cli", "data", "check", f"{root}/t2i/00000.tar",
                          "--task", "t2i", "--image-size", "32"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "checked 256 records: 256 ok" in out.stdout
