#!/usr/bin/env bash
# Start a throwaway SLURM cluster (munged + slurmctld + slurmd on loopback) for debugging by hand,
# the same one the integration tests use. Prints `export SLURM_CONF=...`; Ctrl-C stops every daemon
# by pid and removes the cluster folder. See runbooks/test-clusters.md.
# Usage: scripts/dev-slurm.sh [--nodes 1|2] [--munge auto|own|system] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."
# Only the standard library is needed; any Python 3.10+ works.
exec "${PYTHON:-python3}" -m tests.services.slurm "$@"
