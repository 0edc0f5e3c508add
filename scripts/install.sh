#!/usr/bin/env bash
# Install unigen and its test extras into a virtual environment (default .venv).
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
"$venv/bin/python" -m pip install -q -e ".[ray,test]"
"$venv/bin/python" -m pip check
