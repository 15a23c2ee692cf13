#!/usr/bin/env bash
# Create a W&B sweep from a YAML file and run an agent on this node (needs `wandb login`).
#   launch/sweep_agent.sh launch/sweep.yaml [COUNT]
set -euo pipefail
cd "$(dirname "$0")/.."
SWEEP_YAML=${1:-launch/sweep.yaml}
COUNT=${2:-10}
SWEEP_ID=$(wandb sweep --project "${WANDB_PROJECT:-glyph-train}" "$SWEEP_YAML" 2>&1 | awk '/wandb agent/{print $NF}')
[ -n "$SWEEP_ID" ] || { echo "could not create the sweep (is wandb logged in?)" >&2; exit 1; }
exec wandb agent --count "$COUNT" "$SWEEP_ID"
