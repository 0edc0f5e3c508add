"""One pass lists every problem: schema, cross-field and batch-versus-world-size problems of a recipe (and of
its profile) come out together, and ``init_from`` is checked before anything is queued (a run that is not
under the run root or has no committed checkpoint, a local path that is not a committed checkpoint), by
``unigen validate`` and ``unigen submit`` (with and without --dry-run) alike."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.config.placeholders import smoke_workspace
from unigen.orchestrator import cli
from unigen.orchestrator.config import resolve_submission
from unigen.orchestrator.errors import ConfigError, UserError

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A cwd with the shipped recipes/profiles and placeholder data files, no GPU, no env run root."""
    smoke_workspace(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("UNIGEN_RUN_ROOT", raising=False)
    return tmp_path


def _problems(recipes, profile="local", overrides=(), purpose="validate") -> list[str]:
    with pytest.raises(ConfigError) as err:
        resolve_submission(recipes, profile, list(overrides), purpose=purpose, gpu_count=0)
    return [str(p) for p in err.value.problems]


def _run(*argv: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("unigen")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "unigen.orchestrator.cli"]
    return subprocess.run(command + list(argv), capture_output=True, text=True, timeout=120)


# micro 16 on 2 CPU ranks (profile local), so a global batch of 48 does not split; stage has a typo (schema),
# the warmup outlasts the run and a DeepSpeed key the recipe owns is set (cross-field).
ALL_THREE = """\
base: recipes/smoke-pretrain.yaml
name: one-pass
stage: pretrian
train:
  global_batch_size: 48
  warmup_steps: 100000
  max_steps: 60
  micro_batch_size: 16
deepspeed:
  config: {train_batch_size: 8}
"""


def test_validate_lists_schema_cross_field_and_batch_problems_together(work):
    (work / "all-three.yaml").write_text(ALL_THREE)
    proc = _run("validate", "all-three.yaml", "--profile", "local")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert errors == [
        "error: all-three.yaml:3: stage: invalid value: choose one of 'pretrain' or 'instruct', got 'pretrian'",
        "error: all-three.yaml:5: train.global_batch_size: 48 is not a multiple of micro_batch_size 16 x world size "
        "2 (local.cpu_ranks=2 (no GPU visible)) = 32: use e.g. train.global_batch_size=64, or change "
        "micro_batch_size or the profile",
        "error: all-three.yaml:6: train.warmup_steps: 100000 warmup steps leave no training after them "
        "(max_steps=60): make warmup_steps < max_steps",
        "error: all-three.yaml:10: deepspeed.config.train_batch_size: set by unigen from the recipe: use "
        "train.global_batch_size",
    ], proc.stderr


def test_a_schema_problem_does_not_hide_a_cross_field_problem_of_the_same_section(work):
    (work / "r.yaml").write_text("base: recipes/smoke-pretrain.yaml\ntrain:\n  lrr: 1.0\n  warmup_steps: 500\n"
                                 "  max_steps: 100\n")
    problems = _problems(["r.yaml"])
    assert len(problems) == 2, problems
    assert problems[0].startswith("r.yaml:3: train.lrr: unknown key 'lrr' in train (did you mean 'lr'?)")
    assert problems[1].startswith("r.yaml:4: train.warmup_steps: 500 warmup steps leave no training after them "
                                  "(max_steps=100)")


def test_a_dropped_bad_value_makes_no_problem_of_its_own(work):
    # zero_stage 7 is refused; its default (3) must not then be blamed for clashing with compile_blocks.
    (work / "r.yaml").write_text("base: recipes/smoke-pretrain.yaml\nmodel: {compile_blocks: true}\n"
                                 "deepspeed: {zero_stage: 7}\n")
    problems = _problems(["r.yaml"])
    assert len(problems) == 1 and problems[0].startswith("r.yaml:3: deepspeed.zero_stage: invalid value"), problems
    # and with a valid zero_stage 3 the clash is reported (the check itself runs)
    (work / "r.yaml").write_text("base: recipes/smoke-pretrain.yaml\nmodel: {compile_blocks: true}\n"
                                 "deepspeed: {zero_stage: 3}\n")
    assert [p.split(": ")[1] for p in _problems(["r.yaml"])] == ["model.compile_blocks"]


def test_a_profile_with_problems_still_gives_the_world_size_for_the_batch_check(work):
    profile = work / "cluster_profiles" / "local.yaml"
    profile.write_text(profile.read_text().replace("max_restarts: 3", "max_restarts: -1")
                       .replace('TOKENIZERS_PARALLELISM: "false"', 'TOKENIZERS_PARALLELISM: "false"\n  1BAD: x'))
    batch = ["train.global_batch_size=48", "train.micro_batch_size=16"]
    problems = _problems(["recipes/smoke-pretrain.yaml"], overrides=batch)
    assert any(": local.max_restarts: input should be greater than or equal to 0" in p.lower() for p in problems)
    assert any(": env.1BAD: not a valid environment variable name" in p for p in problems)
    assert any("train.global_batch_size: 48 is not a multiple of micro_batch_size 16 x world size 2" in p
               for p in problems), problems
    # a problem in a field the world size comes from gives no world size, so no guessed batch message
    problems = _problems(["recipes/smoke-pretrain.yaml"], overrides=[*batch, "profile.local.cpu_ranks=0"])
    assert any("local.cpu_ranks" in p for p in problems) and not any("global_batch_size" in p for p in problems)


# ---- init_from --------------------------------------------------------------------------------------------
def _make_run(root: Path, run_id: str, status: str, *, steps=(), durable=None) -> Path:
    run = root / run_id
    (run / "checkpoints").mkdir(parents=True)
    for step in steps:
        (run / "checkpoints" / f"step-{step}").mkdir()
        (run / "checkpoints" / f"step-{step}" / "COMMIT.json").write_text(json.dumps({"step": step}))
    record = {"run_id": run_id, "stage": "pretrain", "status": status,
              "checkpoints": {"latest_local": None, "latest_durable": durable, "last_save_s": None}}
    (run / "run.json").write_text(json.dumps(record))
    return run


@pytest.mark.parametrize("argv", [["validate"], ["submit", "--dry-run"], ["submit"]],
                         ids=["validate", "dry-run", "submit"])
def test_init_from_a_run_that_does_not_exist_fails_before_anything_is_queued(work, argv, capsys):
    root = work / "unigen-runs"
    assert cli.main([argv[0], "recipes/smoke-instruct.yaml", "--profile", "local", *argv[1:],
                     "init_from=run:no-such-run"]) == 2
    err = capsys.readouterr().err
    assert f"error: override 'init_from=run:no-such-run': init_from: no run 'no-such-run' under {root}: " \
           f"`unigen runs --run-root {root}` lists the run ids; give one of them, or submit the pretrain recipe " \
           "and this one in one command" in err, err
    assert not root.exists()  # no run folder, no run root


def test_init_from_a_run_in_the_recipe_file_is_located_at_its_line(work):
    (work / "r.yaml").write_text("base: recipes/smoke-instruct.yaml\ninit_from: run:no-such-run\n")
    proc = _run("submit", "r.yaml", "--profile", "local", "--dry-run")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: r.yaml:2: init_from: no run 'no-such-run' under "), proc.stderr
    assert not (work / "unigen-runs").exists()


def test_init_from_a_run_needs_a_committed_checkpoint(work):
    root = work / "unigen-runs"
    _make_run(root, "pre-running-1", "running")
    (problem,) = _problems(["recipes/smoke-instruct.yaml"], overrides=["init_from=run:pre-running-1"])
    assert problem.endswith("init_from: run pre-running-1 (running) has no committed checkpoint to start from: wait "
                            "until it has saved one (checkpoint.every), or submit both recipes in one command")
    torn = _make_run(root, "pre-failed-1", "failed")
    (torn / "checkpoints" / "step-5").mkdir()  # saved, never committed: not a checkpoint
    (problem,) = _problems(["recipes/smoke-instruct.yaml"], overrides=["init_from=run:pre-failed-1"])
    assert "run pre-failed-1 (failed) has no committed checkpoint to start from: start from a run that saved one" \
        in problem
    # a committed local checkpoint, or a durable copy on record, is something to start from; a unique prefix works
    _make_run(root, "pre-done-1", "completed", steps=(8,))
    _make_run(root, "pre-remote-1", "failed", durable={"step": 4, "uri": "s3://bucket/ck/pre-remote-1/step-4"})
    for ref in ("pre-done-1", "pre-done", "pre-remote-1"):
        sub = resolve_submission(["recipes/smoke-instruct.yaml"], "local", [f"init_from=run:{ref}"], purpose="submit",
                                 gpu_count=0)
        assert sub.stages[0].recipe.init_from == f"run:{ref}"
    (problem,) = _problems(["recipes/smoke-instruct.yaml"], overrides=["init_from=run:pre"])
    assert "run 'pre' is ambiguous under" in problem


def test_init_from_a_path_must_be_a_committed_checkpoint(work):
    run = _make_run(work / "unigen-runs", "pre-1", "completed", steps=(4, 8))
    cases = {
        "no/such/folder": "init_from: checkpoint 'no/such/folder' not found (paths are relative to where you "
                          "submit): give run:<run id>, or an existing step-<N> checkpoint folder",
        str(run / "checkpoints"): f"is not a committed checkpoint (no COMMIT.json in it): it is a checkpoints folder: "
                                  f"give one of its step folders, e.g. {run / 'checkpoints' / 'step-8'}",
        str(run): "is not a committed checkpoint (no COMMIT.json in it): it is a run folder: write init_from=run:pre-1",
    }
    for value, message in cases.items():
        (problem,) = _problems(["recipes/smoke-instruct.yaml"], overrides=[f"init_from={value}"])
        assert message in problem, problem
    for value in (str(run / "checkpoints" / "step-8"), "unigen-runs/pre-1/checkpoints/step-4"):  # relative: to cwd
        sub = resolve_submission(["recipes/smoke-instruct.yaml"], "local", [f"init_from={value}"], purpose="submit",
                                 gpu_count=0)
        assert sub.stages[0].recipe.init_from == value


def test_init_from_a_uri_is_refused_because_the_run_would_not_read_it(work):
    # runtime/init_from.py takes run:<id> or a local step folder: a URI would pass and fail at the run's start
    for uri in ("s3://bucket/ck/pre-1/step-8", "file:///tmp/ck/step-8"):
        (problem,) = _problems(["recipes/smoke-instruct.yaml"], overrides=[f"init_from={uri}"])
        assert f"init_from: {uri!r}: a checkpoint URI is not read by the run (it takes run:<run id> or a local " \
               "step-<N> folder): give run:<id> of the run that wrote it" in problem, problem


def test_a_later_stage_set_by_the_chain_is_not_looked_up(work, capsys):
    # stage 2's init_from is filled with stage 1's run at launch: nothing exists yet, nothing to flag
    assert cli.main(["submit", "recipes/smoke-pretrain.yaml", "recipes/smoke-instruct.yaml", "--profile", "local",
                     "--dry-run"]) == 0
    assert "init_from: set at launch to stage 1's run" in capsys.readouterr().out
    assert not (work / "unigen-runs").exists()


def test_validate_away_from_the_cluster_warns_that_it_did_not_look_the_run_up(work):
    absent = work / "cluster-runs"  # a cluster profile's run root, not mounted here
    overrides = ["init_from=run:pre-1", f"profile.storage.run_root={absent}",
                 "train.global_batch_size=512", "train.micro_batch_size=16"]
    sub = resolve_submission(["recipes/smoke-instruct.yaml"], "slurm-a100", overrides, purpose="validate")
    assert [w for w in sub.warnings if "init_from" in w] == [
        f"recipes/smoke-instruct.yaml: init_from run:pre-1 is not looked up: the run root {absent} is not on this "
        "machine (unigen submit looks it up)"]
    problems = _problems(["recipes/smoke-instruct.yaml"], "slurm-a100", overrides, purpose="submit")
    assert any(f"init_from: no run 'pre-1' under {absent}" in p for p in problems), problems
    assert not absent.exists()


def test_resume_checks_the_recorded_recipe_with_the_same_batch_rule(work):
    from unigen.orchestrator.config import load_profile, load_recipe
    from unigen.orchestrator.runs import RunLedger
    from unigen.orchestrator.submission import submission_from_record

    recipe = load_recipe("recipes/smoke-pretrain.yaml", ["train.global_batch_size=64", "train.micro_batch_size=16"])
    profile = load_profile("local")

    def ledger(run_id: str, cpu_ranks: int) -> RunLedger:
        return RunLedger.create(work / "unigen-runs", run_id=run_id, recipe=recipe,
                                recipe_path="recipes/smoke-pretrain.yaml", recipe_sha256="x",
                                profile=profile.model_copy(update={
                                    "local": profile.local.model_copy(update={"cpu_ranks": cpu_ranks})}))

    assert submission_from_record(ledger("fits-1", 2)).stages[0].accumulation == 2  # 64 = 16 x 2 x 2
    with pytest.raises(UserError, match=r"^run odd-1 \(here\): train\.global_batch_size: 64 is not a "
                       r"multiple of micro_batch_size 16 x world size 3 \(local\.cpu_ranks=3 \(no GPU visible\)\) = 48"):
        submission_from_record(ledger("odd-1", 3))
