#!/usr/bin/env bash
# Create (once) and update the project's virtual environment in .venv; prints nothing when up to date.
# Torch is pinned to the build this machine keeps on local disk (timm needs a matching torchvision).
# --system-site-packages lets a machine that already has torch installed reuse it instead of copying GBs.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${GLYPH_TRAIN_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv --system-site-packages "$VENV"
fi
PIP="$VENV/bin/python -m pip install -q --disable-pip-version-check"
$PIP "torch==2.14.1" "torchvision==0.29.1"
$PIP -e ".[${GLYPH_TRAIN_EXTRAS:-fonts,dev}]"
