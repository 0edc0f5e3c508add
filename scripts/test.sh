#!/usr/bin/env bash
# README command 2 (and what .ci/run runs): the whole test suite on a fresh machine after command 1.
# First the Debian packages the real-cluster and UI tests need (scripts/system-packages.sh: installed as
# root or through password-less sudo, else it says what to install and stops), then pytest.
#   bash scripts/test.sh                     # every test, as CI runs them
#   bash scripts/test.sh tests/unit -x       # arguments replace "tests -q"
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  echo "error: no .venv here: run README command 1 first (bash scripts/install.sh .venv)" >&2
  exit 2
fi
bash scripts/system-packages.sh
if [ $# -eq 0 ]; then
  set -- tests -q
fi
exec .venv/bin/python -m pytest "$@"
