#!/usr/bin/env bash
# Install unigen and its test and bench extras into a virtual environment (default .venv).
# torch is installed FIRST and pinned to the CPU wheel on machines that have it on disk: a plain
# `torch` requirement resolved later would pull a multi-GB CUDA build. On GPU clusters install your
# own torch first; unigen's `torch>=2.6` range then leaves it alone.
set -euo pipefail
venv=${1:-.venv}
py=${PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  "$venv/bin/python" -m pip install -q "torch==2.13.0" || "$venv/bin/python" -m pip install -q "torch>=2.6"
fi
# setuptools notes on every editable build that folders named like the package may shadow it; there
# is none here (the package is unigen, its folders model/ and orchestrator/), so keep the log quiet.
PYTHONWARNINGS="ignore:Editable installation" "$venv/bin/python" -m pip install -q -e ".[ray,test,bench]"
"$venv/bin/python" -m pip check
# One line saying what is there (-I: the checkout's unigen.egg-info must not answer for the venv).
"$venv/bin/python" -I - "$venv" <<'EOF'
import importlib.metadata as md, json, platform, sys
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "missing"
editable = json.loads(md.distribution("unigen").read_text("direct_url.json") or "{}").get("dir_info", {}).get("editable")
libs = ", ".join(f"{n} {version(n)}" for n in ("torch", "transformers", "diffusers", "deepspeed", "mlflow", "ray"))
print(f"installed unigen {version('unigen')}{' (editable)' if editable else ''} into {sys.argv[1]}: "
      f"python {platform.python_version()}, {libs}")
EOF
