"""The distribution ships every subpackage, and the light entry points stay light."""
import json
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


def test_package_data_ships_every_asset_file_and_the_build_config_is_quiet():
    """Ask setuptools itself (no pip, no network, well under a second) which data files a build of this
    pyproject.toml ships, and what it warns about while working that out: every file under model/assets/
    must be shipped, and nothing may be warned (the asset folders look like undeclared packages when
    include-package-data is on: screens of warnings on every `scripts/install.sh`)."""
    code = (
        "import json, warnings\n"
        "from setuptools.dist import Distribution\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    dist = Distribution({'script_name': 'setup.py', 'script_args': []})\n"
        "    dist.parse_config_files()\n"
        "    build_py = dist.get_command_obj('build_py')\n"
        "    build_py.ensure_finalized()\n"
        "    shipped = [f\"{pkg.replace('.', '/')}/{name}\" for pkg, _src, _dst, names in build_py.data_files"
        " for name in names]\n"
        "print(json.dumps({'shipped': shipped, 'warnings': [str(w.message) for w in caught]}))\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert not result["warnings"], "setuptools warns while reading pyproject.toml:\n" + "\n".join(result["warnings"])
    assets = {
        "unigen/model/" + path.relative_to(ROOT / "model").as_posix()
        for path in (ROOT / "model" / "assets").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert assets, "model/assets/ is empty?"
    missing = sorted(assets - set(result["shipped"]))
    assert not missing, f"not shipped; widen [tool.setuptools.package-data] in pyproject.toml: {missing}"
