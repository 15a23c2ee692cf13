#!/usr/bin/env bash
# Debian's SLURM and MUNGE for the one-host cluster of tests/test_launch_modes.py (tests/run.sh calls this).
# Installs only what is missing, and only as root with apt-get; elsewhere that test skips and says why.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
missing=0
for tool in munged slurmctld slurmd sbatch scontrol srun; do
    command -v "$tool" >/dev/null || missing=1
done
[ "$missing" = 1 ] || exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "tests/install_slurm.sh: not root or no apt-get: the SLURM launch test will be skipped" >&2
    exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
