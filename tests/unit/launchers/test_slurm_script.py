"""The sbatch script submitit renders for a run: golden files for the shipped slurm-a100 profile (4
nodes x 8 GPUs), the --dry-run preview, and quoting of every name, path and value that reaches sbatch
or bash.

The bash half of the quoting is checked by running the rendered script with bash and a stand-in
interpreter that records the argv, working directory and environment it got; the sbatch half (#SBATCH
values read back by slurmctld) by tests/integration/test_slurm_launcher.py on a real cluster.
Regenerate the golden files with UNIGEN_UPDATE_GOLDEN=1 after an intended change, and review the diff.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unigen.orchestrator.config import Profile, load_profile
from unigen.orchestrator.errors import ConfigError, UserError
from unigen.orchestrator.launchers.slurm import submission
from unigen.orchestrator.launchers.slurm.submission import sbatch_value

REPO = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).parent / "golden"
NASTY = "sp ace 'sq' \"dq\" ;semi $(touch PWNED) `touch PWNED` \\back *star\nnew line"


def a100() -> dict:
    """The shipped profile as run.json records it (a dict the tests change before ``preview`` types it again)."""
    return load_profile(REPO / "cluster_profiles" / "slurm-a100.yaml").model_dump(mode="json")


def preview(profile: dict, **where) -> str:
    return submission.preview(Profile.model_validate(profile), **where)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UNIGEN_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UNIGEN_UPDATE_GOLDEN=1 once and review it"
    assert text == path.read_text(), f"{name} changed; if intended, regenerate with UNIGEN_UPDATE_GOLDEN=1"


def directives(profile: dict, **where) -> list[str]:
    where = {"run_id": "r", "run_dir": Path("/r"), "workdir": "/w", "dependency": None, **where}
    return [line for line in preview(profile, **where).splitlines() if line.startswith("#SBATCH")]


@pytest.mark.parametrize("stage", [1, 2])
def test_golden_slurm_a100_4_nodes_x_8_gpus(stage):
    profile = a100()
    assert (profile["resources"]["nodes"], profile["resources"]["gpus_per_node"]) == (4, 8)
    name = ("unigen-3b-pretrain-20260101-000000-a1b2", "unigen-3b-instruct-20260101-000000-c3d4")[stage - 1]
    text = preview(profile, run_id=name, run_dir=Path(f"/shared/unigen-runs/{name}"), workdir="/home/alice/unigen",
                   dependency="afterok:4242" if stage == 2 else None)
    check_golden(f"slurm-a100-stage{stage}.sbatch", text)


def test_directives_follow_the_profile():
    profile = a100()
    profile["slurm"].update(account="proj x", qos="high", extra_sbatch=["--gres-flags=enforce-binding", "--hold",
                                                                        "--comment=back\\slash 'q'"])
    profile["resources"]["mem_gb"] = 0.5
    lines = directives(profile)
    assert '#SBATCH --account="proj x"' in lines and "#SBATCH --qos=high" in lines
    assert "#SBATCH --mem=512M" in lines and "#SBATCH --signal=USR2@300" in lines
    assert "#SBATCH --gres-flags=enforce-binding" in lines and "#SBATCH --hold" in lines
    # submitit's shlex.quote would write 'back\\slash '"'"'q'"'"'', which sbatch reads without the backslash
    assert '#SBATCH --comment="back\\\\slash \'q\'"' in lines
    assert {"#SBATCH --requeue", "#SBATCH --output=slurm-%j.out", "#SBATCH --chdir=/r/logs"} <= set(lines)
    assert not any(line.startswith(("#SBATCH --dependency", "#SBATCH --kill-on", "#SBATCH --wckey")) for line in lines)
    assert "#SBATCH --kill-on-invalid-dep=yes" in directives(profile, dependency="afterok:1")


def test_dry_run_prints_the_sbatch_script_of_every_stage(capsys, monkeypatch):
    from unigen.orchestrator import cli

    monkeypatch.chdir(REPO)
    assert cli.main(["submit", "recipes/pretrain.yaml", "recipes/instruct.yaml", "--profile", "slurm-a100",
                     "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("#!/bin/bash") == 2 and out.count("#SBATCH --ntasks-per-node=8") == 2
    assert '#SBATCH --dependency="afterok:<job id of stage 1>"' in out
    assert "exec python -u -m submitit.core._submit /shared/unigen-runs/unigen-3b-pretrain-" in out
    assert "dry run: nothing was submitted" in out


@pytest.mark.parametrize("value, written", [
    ("gpu-a100", "gpu-a100"), ("afterok:12", "afterok:12"), ("a b", '"a b"'), ("x#y", '"x#y"'),
    ("it's", '"it\'s"'), ('say "hi"', '"say \\"hi\\""'), ("back\\slash", '"back\\\\slash"'),
    ("semi;$(x)", '"semi;$(x)"')])
def test_sbatch_values_are_written_the_way_sbatch_reads_them(value, written):
    assert sbatch_value(value) == written


@pytest.mark.parametrize("value", ["two\nlines", "tab\there", "cr\r"])
def test_values_sbatch_cannot_read_are_refused(value):
    with pytest.raises(UserError, match="newline or control character"):
        sbatch_value(value, "slurm.partition")


def test_bad_extra_sbatch_items_are_refused():
    profile = a100()
    profile["slurm"]["extra_sbatch"] = ["--comment=ok", "-x"]
    with pytest.raises(UserError, match=r"slurm.extra_sbatch.1: '-x' is not an sbatch option"):
        directives(profile)
    profile["slurm"]["extra_sbatch"] = ["--comment=two\nlines"]
    with pytest.raises(UserError, match=r"slurm.extra_sbatch.0: .* newline or control character"):
        directives(profile)


def test_profile_rejects_multi_line_directive_values(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text('name: p\nlauncher: slurm\nresources: {gpus_per_node: 1}\nslurm:\n  partition: "a\\nb"\n'
                    '  srun_args: [gpu-bind]\n')
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    text = str(err.value)
    assert "slurm.partition: must be non-empty text on one line" in text
    assert "slurm.srun_args: 'gpu-bind': write one srun option per item" in text


def _fake_python(tmp_path: Path) -> Path:
    """Stands in for the interpreter: records argv (NUL-separated), cwd and two variables as JSON."""
    path = tmp_path / "bin dir" / "fake python"
    path.parent.mkdir()
    record = tmp_path / "record.json"
    path.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    f"json.dump({{'argv': sys.argv[1:], 'cwd': os.getcwd(), 'odd': os.environ.get('ODD'),"
                    f" 'omp': os.environ.get('OMP_NUM_THREADS')}}, open({str(record)!r}, 'w'))\n")
    path.chmod(0o755)
    return path


def test_bash_receives_every_path_and_value_unchanged(tmp_path):
    workdir = tmp_path / f"work {NASTY}"
    # The run folder reaches an #SBATCH line (--chdir), which cannot hold a newline: refused, clearly.
    with pytest.raises(UserError, match="run folder: .* newline or control character"):
        preview(a100(), run_id="r", run_dir=tmp_path / NASTY, workdir="/w", dependency=None)
    run_dir = tmp_path / f"runs {NASTY.splitlines()[0]}" / "run-1"
    workdir.mkdir()
    run_dir.mkdir(parents=True)
    profile = a100()
    profile["slurm"].update(python=str(_fake_python(tmp_path)), setup=["export FROM_SETUP=1"])
    profile["env"] = {"ODD": NASTY, "OMP_NUM_THREADS": "3"}
    script = preview(profile, run_id="odd-run", run_dir=run_dir, workdir=str(workdir), dependency=None)
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    # sbatch reads directives up to the first command: all of them must come before it, one per line.
    lines = script.splitlines()
    first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    assert all(line.startswith("#SBATCH ") for line in lines[:first_command] if line.startswith("#SB"))
    assert sum(line.startswith("#SBATCH") for line in lines[first_command:]) == 0
    proc = subprocess.run(["bash", str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = json.loads((tmp_path / "record.json").read_text())
    assert got["argv"] == ["-u", "-m", "submitit.core._submit", str(run_dir / "slurm")]
    assert got["cwd"] == str(workdir)
    assert (got["odd"], got["omp"]) == (NASTY, "3")
    assert not list(tmp_path.rglob("PWNED*")) and not list(workdir.rglob("PWNED*"))
