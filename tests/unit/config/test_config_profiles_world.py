"""Profiles: world size per launcher, GPU detection, lookup order, run root, literal secrets, SLURM rules."""
from __future__ import annotations

from pathlib import Path

import pytest

from unigen.orchestrator.config import load_profile, resolve_submission, run_root_for, visible_gpus, world_of
from unigen.orchestrator.config.checks import slurm_time_seconds
from unigen.orchestrator.config.secrets_check import is_literal_secret_name
from unigen.orchestrator.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "recipes" / "smoke-pretrain.yaml"


def _profile(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_world_size_per_launcher(tmp_path):
    local = load_profile(ROOT / "cluster_profiles" / "local.yaml")
    assert world_of(local, gpu_count=0).size == 2 and not world_of(local, gpu_count=0).gpus
    assert world_of(local, gpu_count=4).size == 4 and world_of(local, gpu_count=4).gpus
    gloo = load_profile(ROOT / "cluster_profiles" / "local.yaml", ["local.backend=gloo", "local.cpu_ranks=3"])
    assert world_of(gloo, gpu_count=8).size == 3
    assert world_of(load_profile(ROOT / "cluster_profiles" / "slurm-a100.yaml")).size == 32
    cpu_slurm = load_profile(_profile(tmp_path, "name: p\nlauncher: slurm\nresources: {nodes: 2, ranks_per_node: 3}\n"))
    assert world_of(cpu_slurm).size == 6 and not world_of(cpu_slurm).gpus
    ray = load_profile(ROOT / "cluster_profiles" / "ray-cloud.yaml", ["ray.workers=5"])
    assert world_of(ray).size == 5 and world_of(ray).why == "ray.workers=5"


@pytest.mark.parametrize("value,count", [("0,1", 2), ("", 0), ("-1", 0), ("3", 1), ("GPU-abc,GPU-def,GPU-0", 3)])
def test_visible_gpus_reads_cuda_visible_devices(monkeypatch, value, count):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert visible_gpus() == count


def test_nccl_without_gpus_is_refused():
    with pytest.raises(ConfigError, match=r"local\.backend: nccl needs GPUs and none is visible: use auto or gloo"):
        resolve_submission([SMOKE], str(ROOT / "cluster_profiles" / "local.yaml"), ["profile.local.backend=nccl"],
                           purpose="validate", gpu_count=0)


def test_profile_lookup_order_and_error(tmp_path, monkeypatch):
    for sub in ("cwd/cluster_profiles", "envdir", "proj/cluster_profiles", "proj/recipes"):
        (tmp_path / sub).mkdir(parents=True)
    for where in ("cwd/cluster_profiles", "envdir", "proj/cluster_profiles"):
        _profile(tmp_path / where, f"name: {where.split('/')[0]}\nlauncher: local\n", "mine.yaml")
    recipe = tmp_path / "proj" / "recipes" / "r.yaml"
    recipe.write_text(SMOKE.read_text())
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("UNIGEN_PROFILES_DIR", str(tmp_path / "envdir"))

    def found() -> str:
        return resolve_submission([recipe], "mine", purpose="validate", gpu_count=0).profile.name

    assert found() == "cwd"
    (tmp_path / "cwd/cluster_profiles/mine.yaml").unlink()
    assert found() == "envdir"
    (tmp_path / "envdir/mine.yaml").unlink()
    assert found() == "proj"
    (tmp_path / "proj/cluster_profiles/mine.yaml").unlink()
    with pytest.raises(ConfigError) as err:
        found()
    text = str(err.value)
    assert text.startswith("--profile mine: no such profile file; searched cluster_profiles/mine.yaml, ")
    assert str(tmp_path / "envdir" / "mine.yaml") in text
    assert str(tmp_path / "proj" / "cluster_profiles" / "mine.yaml") in text


def test_run_root_precedence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("UNIGEN_RUN_ROOT", raising=False)
    profile = load_profile(ROOT / "cluster_profiles" / "local.yaml")
    assert run_root_for(profile) == tmp_path / "unigen-runs"
    assert run_root_for(load_profile(ROOT / "cluster_profiles" / "local.yaml", ["storage.run_root=elsewhere"])) == \
        tmp_path / "elsewhere"
    monkeypatch.setenv("UNIGEN_RUN_ROOT", str(tmp_path / "from-env"))
    assert run_root_for(profile) == tmp_path / "from-env"


@pytest.mark.parametrize("name,secret", [
    ("secret_access_key", True), ("HF_TOKEN", True), ("WANDB_API_KEY", True), ("password", True),
    ("AWS_SESSION_TOKEN", True), ("key", True), ("secret_access_key_env", False), ("TOKENIZERS_PARALLELISM", False),
    ("tokenizer_source", False), ("keep_last", False), ("max_tokens", False), ("NCCL_SOCKET_IFNAME", False)])
def test_literal_secret_names(name, secret):
    assert is_literal_secret_name(name) is secret


def test_literal_secrets_are_refused_without_echoing_them(tmp_path):
    path = _profile(tmp_path, "name: p\nlauncher: slurm\nresources: {gpus_per_node: 1}\nslurm:\n  setup:\n"
                    "    - export AWS_SECRET_ACCESS_KEY=abcdef123456\n    - export HOME_TOKEN=$VAULT_TOKEN\n"
                    "storage:\n  s3:\n    secret_access_key_env: 'abc/def+ghi'\n")
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    text = str(err.value)
    assert "slurm.setup.0: this line assigns a literal value to AWS_SECRET_ACCESS_KEY" in text
    assert "slurm.setup.1" not in text  # a reference to another variable is fine
    assert "storage.s3.secret_access_key_env: must be the NAME of an environment variable" in text
    assert "abcdef123456" not in text and "abc/def+ghi" not in text


def test_slurm_rules(tmp_path):
    base = "name: p\nlauncher: slurm\nresources: {nodes: 1, gpus_per_node: 4, ranks_per_node: 2}\n"
    path = _profile(tmp_path, base + "slurm: {time: '00:01:00', signal_grace_s: 90, extra_sbatch: ['#SBATCH -x']}\n")
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    lines = str(err.value).splitlines()
    assert any("resources.ranks_per_node: 2 with 4 GPUs per node: unigen runs one rank per GPU" in x for x in lines)
    assert any("slurm.signal_grace_s: 90 s is not shorter than the time limit 00:01:00" in x for x in lines)
    assert any("slurm.extra_sbatch.0: write one sbatch option per item as --key=value" in x for x in lines)
    assert load_profile(_profile(tmp_path, base.replace(", ranks_per_node: 2", "") + "slurm: {time: 90}\n")).slurm.time == "90"


@pytest.mark.parametrize("text,seconds", [("90", 5400), ("30:00", 1800), ("24:00:00", 86400), ("2-00:00:00", 172800),
                                          ("1-12", 129600), ("0-00:30", 1800)])
def test_slurm_time_seconds(text, seconds):
    assert slurm_time_seconds(text) == seconds


def test_local_profile_refuses_cluster_resources(tmp_path):
    path = _profile(tmp_path, "name: p\nlauncher: local\nresources: {nodes: 2, gpus_per_node: 8}\n")
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    assert "resources.nodes: not used by launcher: local" in str(err.value)
    assert "resources.gpus_per_node: not used by launcher: local (it uses every visible GPU" in str(err.value)
