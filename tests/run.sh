#!/usr/bin/env bash
# The test command (README, and CI's .ci/run): set up .venv, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/check_disk.sh  # room for .venv and the temporary files, said before anything fails for want of it
bash launch/setup_env.sh
bash tests/install_slurm.sh  # the SLURM launch test's one-host cluster (root + apt-get only)
bash tests/setup_browser.sh  # Debian's chromium + chromium-driver for the serve browser tests (when missing)
bash tests/setup_compiler.sh  # g++ for the AMX search kernel (when missing)
export WANDB_MODE=offline WANDB_SILENT=true
exec "${GLYPH_TRAIN_VENV:-.venv}/bin/python" -m pytest -q "$@"
