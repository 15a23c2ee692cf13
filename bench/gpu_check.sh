#!/usr/bin/env bash
# One script for a GPU machine (issue 9): run it there and copy the summary into BENCHMARKS.md.
#
#   bench/gpu_check.sh [--device cuda|cpu] [--quick] [--db glyphs.db] [--out DIR]
#
# 1. 1-GPU bf16 (and fp32) img/s at 64 and 128 px, the trainer vs a bare loop (bench/bench_training.py).
# 2. DataLoader + augmentation headroom: img/s the training loader delivers vs img/s the GPU consumes
#    (same run: loader_img_per_s / trainer img/s; < 1 means the loader cannot feed the GPU).
# 3. With more than one GPU: NCCL all-reduce bandwidth over all of them (bench/bench_allreduce.py) and a
#    short real `accelerate launch --multi_gpu` training run reporting its world size.
# 4. Embed throughput: an export's forward pass over a stream of batches (bench/bench_embed.py), on the
#    export the trainer runs of step 1 wrote.
#
# --device cpu --quick: the same steps on CPU with tiny sizes (and gloo with 2 processes for step 3), to check
# the script itself where there is no GPU. Without --db a small DB is built from the installed fontpkg fonts.
# Results: DIR/*.json and DIR/summary.txt (default DIR: runs/gpu_check).
set -euo pipefail

DEVICE=cuda QUICK=0 DB="" OUT=runs/gpu_check
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --db) DB="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "gpu_check.sh: --device must be cuda or cpu" >&2; exit 2 ;; esac

HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python}"
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=disabled
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
trap 'echo "gpu_check.sh: a step failed (line $LINENO); logs in $OUT" >&2' ERR

if [ "$DEVICE" = cuda ]; then
  "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || { echo "gpu_check.sh: no CUDA device visible to torch (use --device cpu --quick to check the script)" >&2; exit 1; }
  NGPU="$("$PY" -c 'import torch; print(torch.cuda.device_count())')"
  say "GPUs: $NGPU ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | sort | uniq -c | xargs || echo unknown))"
else
  export CUDA_VISIBLE_DEVICES=""  # every step on the CPU
  NGPU=0
  say "CPU check only: $(getconf _NPROCESSORS_ONLN) cores"
fi
say "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "$QUICK" = 1 ]; then
  TRAIN_ARGS=(--model test_vit --img-size 32 --limit 800 --batch-size 16 --warmup 1 --steps 2 --repeats 1
              --loader-batches 5 --num-workers 1 --threads 1)
  EMBED_ARGS=(--batch-size 32 --batches 4 --warmup 1 --repeats 1)
  MIB=4
else
  TRAIN_ARGS=(--model levit_128s --img-size 64 128 --limit 20000 --batch-size 256 --warmup 10 --steps 40
              --repeats 3 --loader-batches 100 --num-workers 8 --threads 4)
  EMBED_ARGS=(--batch-size 1024 --batches 50 --warmup 5 --repeats 3)
  MIB=256
fi
DB_ARGS=()
[ -n "$DB" ] && DB_ARGS=(--db "$DB")

# 1 + 2: trainer vs bare loop, bf16 and fp32, loader headroom -------------------------------------------
say "== 1. training img/s (trainer vs bare loop, bf16 vs fp32) and 2. loader headroom"
"$PY" "$HERE/bench/bench_training.py" "${DB_ARGS[@]}" "${TRAIN_ARGS[@]}" --precision bf16 no \
  --workdir "$OUT/train" --json "$OUT/training.json" > /dev/null 2> "$OUT/training.log"
"$PY" - "$OUT/training.json" <<'PYEOF' | tee -a "$SUMMARY"
import json, sys
res = json.load(open(sys.argv[1]))
print(f"device {res['device']}, batch {res['batch_size']}, {res['num_workers']} workers, load {res['load_start']} -> {res['load_end']}")
for row in res["results"]:
    print(f"{row['img_size']:>4} px {row['precision']:>4}: trainer {row['trainer_img_per_s']:>9} img/s, "
          f"bare {row['bare_img_per_s']:>9} img/s, trainer/bare {row['trainer_over_bare']}, "
          f"bf16/fp32 {row.get('trainer_bf16_over_fp32', '-')}, "
          f"loader {res['loader_img_per_s'][str(row['img_size'])]} img/s = {row['loader_over_training']}x training")
PYEOF

# 3: several GPUs -----------------------------------------------------------------------------------------
if [ "$NGPU" -gt 1 ] || [ "$QUICK" = 1 ]; then
  if [ "$NGPU" -gt 1 ]; then NPROC=$NGPU BACKEND=nccl; else NPROC=2 BACKEND=gloo; fi
  say "== 3. $BACKEND all-reduce and a $NPROC-process training run"
  "$PY" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" "$HERE/bench/bench_allreduce.py" \
    --backend "$BACKEND" --mib "$MIB" | tail -n 1 | tee "$OUT/allreduce.json" | tee -a "$SUMMARY"
  CACHE="$(ls -d "$OUT"/train/cache_* | tail -n 1)"
  if [ "$BACKEND" = nccl ]; then
    LAUNCH=(--config_file "$HERE/accelerate_configs/multi_gpu.yaml" --mixed_precision bf16)
  else  # the gloo path of a CPU node (see that config for why it says MULTI_GPU)
    LAUNCH=(--config_file "$HERE/accelerate_configs/cpu_multiprocess.yaml" --mixed_precision no)
  fi
  LAUNCH+=(--num_processes "$NPROC")
  "$PY" -m accelerate.commands.launch "${LAUNCH[@]}" -m glyph_train.train --data "$CACHE" \
    --model "${TRAIN_ARGS[1]}" --epochs 1 --max-steps 4 --batch-size 16 --num-workers 1 --log-interval 1 \
    --wandb-mode disabled --out-dir "$OUT/multi" > "$OUT/multi.log" 2>&1
  grep -m1 "world size" "$OUT/multi.log" | tee -a "$SUMMARY"
else
  say "== 3. one GPU: no NCCL check"
fi

# 4: embed throughput -------------------------------------------------------------------------------------
EXPORT="$(ls -d "$OUT"/train/trainer_*/export | tail -n 1)"
say "== 4. embed throughput ($EXPORT)"
for precision in bf16 no; do
  "$PY" "$HERE/bench/bench_embed.py" "$EXPORT" --device "$DEVICE" --precision "$precision" "${EMBED_ARGS[@]}" \
    | tee -a "$OUT/embed.json" | tee -a "$SUMMARY"
done
say "done: $OUT"
