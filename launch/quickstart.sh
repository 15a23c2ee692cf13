#!/usr/bin/env bash
# The main job on the default corpus, from a fresh machine with python3 and npm:
# set up .venv → build data/glyphs.db from the fontpkg fonts and every Arabic @fontsource family (fetched
# with npm into ~/.cache/glyph-train/fontsource; without npm, build-db says so and uses fontpkg alone) →
# prepare the raster cache (core labels: ASCII letters/digits + Arabic letter forms, tight fit, 64 px) →
# contact sheet → a short 2-process CPU training run (W&B offline) → final metrics.
#   bash launch/quickstart.sh            (EPOCHS=3 PROCS=2 by default; extra args go to the trainer)
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup_env.sh
source "${GLYPH_TRAIN_VENV:-.venv}/bin/activate"
EPOCHS=${EPOCHS:-3}
RUN=${RUN:-runs/quickstart-$(date +%Y%m%d-%H%M%S)}  # a new run directory each time: a used one is refused
mkdir -p data runs
glyph-train build-db data/glyphs.db --fontpkg --fontsource arabic
glyph-train prepare --db data/glyphs.db --out data/cache --labels launch/core_labels.txt --min-label-count 2 \
    --fit tight --img-size 64
glyph-train show --db data/glyphs.db --random 64 --out data/contact_sheet.png
PROCS=${PROCS:-2} bash launch/cpu_single_node.sh --data data/cache --epochs "$EPOCHS" --batch-size 64 \
    --out-dir "$RUN" "$@"
echo "run directory: $RUN (metrics.jsonl, export/, wandb/ offline run: upload with 'wandb sync')"
