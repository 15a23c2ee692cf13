#!/usr/bin/env bash
# Train with N gloo processes x T threads on one CPU node.
#   PROCS=4 THREADS=8 launch/cpu_single_node.sh --db glyphs.db --epochs 10 --out-dir runs/cpu4
# Rule of thumb: PROCS * THREADS = physical cores; more processes = larger global batch (batch is per process).
set -euo pipefail
cd "$(dirname "$0")/.."
PROCS=${PROCS:-2}
THREADS=${THREADS:-$(( $(nproc) / PROCS > 0 ? $(nproc) / PROCS : 1 ))}
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
export GLYPH_TRAIN_NUM_PROCESSES=$PROCS  # the trainer refuses to run if it sees fewer
exec "${PYTHON:-python3}" -m accelerate.commands.launch --config_file accelerate_configs/cpu_multiprocess.yaml --num_processes "$PROCS" \
    -m glyph_train.train "$@"
