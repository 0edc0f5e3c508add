"""The `unigen` front: parsing, dispatch, error reporting, `validate`, `submit` (hand-off and --dry-run)."""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from unigen.orchestrator import cli
from unigen.orchestrator.errors import UserError

ROOT = Path(__file__).resolve().parents[3]
HEAVY = ("torch", "deepspeed", "mlflow", "ray", "boto3", "transformers", "diffusers")


def _heavy_after(code: str) -> list[str]:
    probe = code + f"\nimport sys\nprint('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("HEAVY=")][-1]
    return [m for m in line[len("HEAVY="):].split(",") if m]


def test_help_and_validate_import_nothing_heavy():
    assert _heavy_after("from unigen.orchestrator.cli import main\ntry:\n    main(['--help'])\n"
                        "except SystemExit:\n    pass") == []
    assert _heavy_after("from unigen.orchestrator.cli import main\n"
                        "assert main(['validate', 'recipes/pretrain.yaml', 'recipes/instruct.yaml', '--profile', "
                        "'slurm-a100', '--quiet']) == 0") == []


@pytest.mark.parametrize("argv", [
    ["submit", "r.yaml", "--profile", "p", "train.lr=1", "--name", "x", "--dry-run", "--wait"],
    ["validate"], ["validate", "r.yaml", "--fields"], ["status"], ["status", "abc"],
    ["runs", "--experiment", "e", "--stage", "instruct", "--status", "requeued", "--sync", "--run-root", "d"],
    ["lineage", "abc"], ["ui", "--port", "5001"],
    ["generate", "--run", "r", "--prompt", "a cat", "--out", "o.png", "--steps", "4", "--guidance", "3.5",
     "--seed", "1", "--height", "64", "--width", "64", "--image", "in.png"],
    ["generate", "--checkpoint", "c", "--prompt", "p", "--out", "o.png"],
    ["chat", "--run", "r", "--image", "i.png", "--prompt", "what?", "--max-new-tokens", "16"],
    ["eval", "r", "--step", "9", "--suite", "t2i", "edit", "--suite", "depth", "--samples", "4", "--out", "d",
     "--steps", "2", "--guidance", "3", "--image-guidance", "1.2", "--seed", "1", "--run-root", "x"],
    ["export", "r", "--out", "d"], ["resume", "r", "--plan", "--wait"], ["cancel", "r"],
    ["logs", "r", "--rank", "1", "--follow"], ["data"],
])
def test_every_subcommand_parses(argv):
    _, args = cli.parse_args(argv)
    assert args.command == argv[0]


@pytest.mark.parametrize("argv", [
    ["generate", "--run", "r", "--checkpoint", "c", "--prompt", "p", "--out", "o.png"],  # exclusive
    ["generate", "--prompt", "p", "--out", "o.png"],  # one of --run / --checkpoint is required
    ["submit", "r.yaml"],  # --profile is required
    ["runs", "--status", "sleeping"], ["logs"], ["export", "r"], ["eval"], ["eval", "r", "--step", "last"],
])
def test_bad_command_lines_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as err:
        cli.main(argv)
    assert err.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_statuses_match_the_ledger():
    from unigen.orchestrator.runs import STATUSES

    assert cli.RUN_STATUSES == STATUSES


def test_missing_command_module_is_one_line_and_exit_2(capsys):
    assert cli._dispatch(argparse.Namespace(command="no_such_command")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: `unigen no_such_command` is not available in this build "
                   "(unigen.orchestrator.commands.no_such_command is missing)"]


def test_user_errors_become_error_lines_with_secrets_scrubbed(monkeypatch, capsys):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-123")

    def boom(args):
        raise UserError("first problem\nsecond problem with s3cr3t-value-123 inside")

    monkeypatch.setitem(sys.modules, "unigen.orchestrator.commands.status", types.SimpleNamespace(run=boom))
    assert cli.main(["status"]) == 2
    assert capsys.readouterr().err.splitlines() == ["error: first problem", "error: second problem with *** inside"]


def test_existing_command_modules_are_dispatched(tmp_path, capsys):
    assert cli.main(["runs", "--run-root", str(tmp_path)]) == 0
    assert f"no runs under {tmp_path}" in capsys.readouterr().out


def test_data_commands_come_from_the_data_package(monkeypatch, capsys):
    seen = {}

    def add_subcommands(subparsers):
        p = subparsers.add_parser("synth", help="write the synthetic corpus")
        p.add_argument("--out", required=True)
        p.set_defaults(func=lambda args: seen.setdefault("out", args.out) and 0)

    monkeypatch.setitem(sys.modules, "unigen.model.data.cli", types.SimpleNamespace(add_subcommands=add_subcommands))
    assert cli.main(["data", "synth", "--out", "x"]) == 0 and seen == {"out": "x"}
    assert cli.main(["data"]) == 2  # no data subcommand: its help, exit 2
    assert "synth" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "unigen.model.data.cli", None)  # as if the module did not exist
    assert cli.main(["data"]) == 2
    assert "`unigen data` is not available in this build" in capsys.readouterr().err


@pytest.fixture
def smoke_workdir(tmp_path, monkeypatch):
    """A cwd with the shipped recipes/profiles and placeholder data files, no GPU, no env run root."""
    for name in ("recipes", "cluster_profiles"):
        shutil.copytree(ROOT / name, tmp_path / name)
    for rel in ("t2i/00000.tar", "t2i-single/00000.tar", "interleaved/00000.tar", "heldout/t2i/00000.tar"):
        (tmp_path / "unigen-data/shapes" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "unigen-data/shapes" / rel).touch()
    (tmp_path / "unigen-data/shapes/edit/instructpix2pix").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("UNIGEN_RUN_ROOT", raising=False)
    return tmp_path


def test_submit_hands_the_resolved_submission_to_the_launcher(smoke_workdir, monkeypatch, capsys):
    calls = []
    from unigen.orchestrator import submission as submit

    monkeypatch.setattr(submit, "submit_stages", lambda sub, *, wait: calls.append((sub, wait)) or 0)
    monkeypatch.setattr(submit, "describe_launch", lambda sub: "#!/bin/bash\n#SBATCH --fake")
    rc = cli.main(["submit", "recipes/smoke-pretrain.yaml", "--profile", "local", "--name", "trial", "--wait",
                   "train.max_steps=400"])
    assert rc == 0 and len(calls) == 1
    sub, wait = calls[0]
    assert wait is True and sub.name == "trial" and sub.world_size == 2
    assert sub.stages[0].recipe.train.max_steps == 400 and sub.stages[0].accumulation == 1
    assert sub.run_root == smoke_workdir / "unigen-runs" and not sub.run_root.exists()

    assert cli.main(["submit", "recipes/smoke-pretrain.yaml", "--profile", "local", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert len(calls) == 1  # --dry-run submits nothing
    assert "resolved profile:" in out and "resolved recipe:" in out and "#SBATCH --fake" in out
    assert "global batch 32 = micro 16 x accumulation 1 x world 2" in out
    assert out.rstrip().endswith("dry run: nothing was submitted (1 stage(s) would run with launcher local)")
    assert not (smoke_workdir / "unigen-runs").exists()


def test_submit_without_a_recipe_is_one_error_line(smoke_workdir, capsys):
    assert cli.main(["submit", "train.lr=1", "--profile", "local"]) == 2
    assert "error: no recipe file given" in capsys.readouterr().err


def test_submit_warns_when_the_grace_time_is_shorter_than_the_last_save(smoke_workdir, monkeypatch, capsys):
    from unigen.orchestrator import submission as submit
    from unigen.orchestrator.config import load_profile, load_recipe
    from unigen.orchestrator.runs import RunLedger

    monkeypatch.setattr(submit, "submit_stages", lambda sub, *, wait: 0)
    root = smoke_workdir / "unigen-runs"
    monkeypatch.setenv("UNIGEN_RUN_ROOT", str(root))  # the profile's run root is a cluster path
    argv = ["submit", "recipes/pretrain.yaml", "--profile", "slurm-a100", "--dry-run"]
    assert cli.main(argv) == 0
    assert "signal_grace_s" not in capsys.readouterr().err  # no earlier run: nothing measured yet
    earlier = RunLedger.create(root, run_id="pretrain-old", recipe=load_recipe("recipes/pretrain.yaml"),
                               recipe_path="recipes/pretrain.yaml", recipe_sha256="x",
                               profile=load_profile("slurm-a100"))
    earlier.update(lambda r: r["checkpoints"].__setitem__("last_save_s", 450.0))
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "warning: recipes/pretrain.yaml: the last run of unigen-3b-pretrain took 450 s to save a checkpoint, but " \
           "slurm.signal_grace_s is 300 s" in err and "profile.slurm.signal_grace_s=705" in err
    assert cli.main([*argv, "profile.slurm.signal_grace_s=600"]) == 0
    assert "signal_grace_s" not in capsys.readouterr().err  # 600 s covers the 450 s save


def test_validate_prints_config_batch_deepspeed_and_memory(smoke_workdir, capsys):
    assert cli.main(["validate", "recipes/smoke-pretrain.yaml", "recipes/smoke-instruct.yaml", "--profile", "local",
                     "instruct:train.lr=1e-4"]) == 0
    out = capsys.readouterr().out
    assert "world size: 2 CPU ranks (local.cpu_ranks=2 (no GPU visible))" in out
    assert "stage 2: recipes/smoke-instruct.yaml  [instruct]" in out
    assert "init_from: set at launch to stage 1's run" in out
    assert '"gradient_accumulation_steps": 1' in out and "lr: 0.0001" in out
    assert out.count("memory per CPU rank (estimate; 2 data-parallel ranks, fp32") == 2
    assert "ok: 2 recipe(s) and profile local valid" in out


def test_validate_a_profile_alone_and_the_field_reference(smoke_workdir, capsys):
    assert cli.main(["validate", "--profile", "slurm-a100"]) == 0
    out = capsys.readouterr().out
    assert "world size: 32 GPU ranks (resources.nodes=4 x gpus_per_node=8)" in out and "ok: profile slurm-a100 valid" in out
    assert cli.main(["validate", "--fields"]) == 0
    out = capsys.readouterr().out
    for key in ("train.global_batch_size", "data.sources.N.weight", "storage.s3.secret_access_key_env", "slurm.time"):
        assert key in out
