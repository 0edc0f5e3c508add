#!/usr/bin/env bash
# The Debian packages the test suite needs besides the venv: SLURM and munge (the real-cluster tests start
# slurmctld, slurmd and munged on loopback) and Chromium with its driver (the MLflow UI test). Installs
# what is missing as root, or through sudo when it needs no password; otherwise says what to run and exits 2.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge chromium chromium-driver)
# one file each package puts on the machine, in PACKAGES' order
PROVIDES=(/usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch /usr/sbin/munged /usr/bin/chromium /usr/bin/chromedriver)

missing=()
for i in "${!PACKAGES[@]}"; do
  [ -e "${PROVIDES[$i]}" ] || missing+=("${PACKAGES[$i]}")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" = 0 ]; then
  as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "error: the tests need Debian packages that are not installed: ${missing[*]}" >&2
  echo "  install them as root, then run the tests again:" >&2
  echo "  apt-get install -y --no-install-recommends ${PACKAGES[*]}" >&2
  exit 2
fi

echo "installing system packages for the tests: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
