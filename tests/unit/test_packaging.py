"""The distribution ships every subpackage, and the light entry points stay light."""
import pathlib
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for top, dotted in (("model", "unigen.model"), ("orchestrator", "unigen.orchestrator")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((dotted, *rel)))
    missing = found - listed
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def test_import_orchestrator_and_light_model_modules_pull_no_heavy_packages():
    code = (
        "import sys, unigen.orchestrator, unigen.model, unigen.model.data.spec\n"
        "heavy = [m for m in ('torch', 'deepspeed', 'mlflow', 'ray', 'boto3', 'transformers', 'diffusers')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported at package import: {out.stdout.strip()}"


def test_a_regular_wheel_install_imports_both_packages_and_ships_the_assets(tmp_path):
    """`pip install .` (not editable): build the wheel, unpack it into a folder of its own and import
    from there, in a folder without the source tree, so nothing can come from the checkout."""
    wheels, site, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-w", str(wheels)], check=True,
                   capture_output=True, timeout=300)
    (wheel,) = wheels.glob("unigen-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True,
                   timeout=300)
    code = (
        "import sys, unigen.model, unigen.orchestrator, unigen.orchestrator.cli\n"
        "from pathlib import Path\n"
        f"assert Path(unigen.model.__file__).is_relative_to({str(site)!r}), unigen.model.__file__\n"
        "assets = Path(unigen.model.__file__).parent / 'assets' / 'tiny_tokenizer' / 'tokenizer.json'\n"
        "assert assets.is_file(), assets\n"
        "import unigen.model.data.cli, unigen.orchestrator.launchers.local, unigen.orchestrator.runtime.trainer\n"
        "try:\n    unigen.orchestrator.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "unigen submit" in out.stdout
