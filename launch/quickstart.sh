#!/usr/bin/env bash
# The main job on the default corpus, from a fresh machine with python3 and npm:
# set up .venv → build data/glyphs.db from the fontpkg fonts and every Arabic @fontsource family (fetched
# with npm into ~/.cache/glyph-train/fontsource; without npm, build-db says so and uses fontpkg alone) →
# contact sheet of what the model sees (tight + origin channels) → the measured recipe (launch/recipe.yaml: core
# labels, i.e. ASCII letters/digits + Arabic letter forms, 64 px, 7 epochs) on 2 CPU processes, which first
# renders the cache into data/cache (W&B offline) → final metrics.
#   bash launch/quickstart.sh            (PROCS=2 by default; extra args go to the trainer, e.g. --epochs 3)
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup_env.sh
source "${GLYPH_TRAIN_VENV:-.venv}/bin/activate"
PROCS=${PROCS:-2}
RUN=${RUN:-runs/quickstart-$(date +%Y%m%d-%H%M%S)}  # a new run directory each time: a used one is refused
mkdir -p data runs
glyph-train build-db data/glyphs.db --fontpkg --fontsource arabic
glyph-train show --db data/glyphs.db --random 64 --fit tight+origin --img-size 64 \
    --out data/contact_sheet.png
# the recipe's global batch of 128, split over the processes
PROCS=$PROCS bash launch/cpu_single_node.sh --config launch/recipe.yaml --db data/glyphs.db --cache-dir data/cache \
    --batch-size $(( 128 / PROCS )) --out-dir "$RUN" "$@"
echo "run directory: $RUN (metrics.jsonl, export/, wandb/ offline run: upload with 'wandb sync')"
