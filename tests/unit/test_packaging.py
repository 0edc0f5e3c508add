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
