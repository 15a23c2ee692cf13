"""Reference quality run on the default corpus: family-disjoint split, `tight` vs `em` fit.

Trains the same recipe once per fit on the core label set (launch/core_labels.txt: ASCII letters and
digits, and every positional form of the Arabic letters U+0621–U+064A) and reports top-1, hit@10, MAP@R, effect size and
wall time of each run (prepare + train + evaluation), side by side.

    glyph-train build-db data/glyphs.db --fontpkg
    python bench/bench_quality.py --db data/glyphs.db --out runs/quality
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CORE_LABELS = Path(__file__).resolve().parents[1] / "launch" / "core_labels.txt"
RECIPE = ["--model", "levit_128s", "--img-size", "64", "--batch-size", "128", "--epochs", "8",
          "--lr-backbone", "1e-3", "--lr-head", "2e-3", "--weight-decay", "0.05", "--warmup-frac", "0.05",
          "--lr-schedule", "cosine", "--label-smoothing", "0.1", "--emb-loss-weight", "0.3",
          "--min-label-count", "2", "--split", "font", "--val-frac", "0.1", "--num-workers", "1",
          "--retrieval-every", "4", "--log-interval", "50", "--seed", "0"]


def run_fit(db: Path, out: Path, fit: str, labels_file: Path, extra: list[str]) -> dict:
    run_dir = out / fit
    cmd = [sys.executable, "-m", "glyph_train.train", "--db", str(db), "--labels", str(labels_file),
           "--fit", fit, "--cache-dir", str(out / f"cache_{fit}"), "--out-dir", str(run_dir),
           "--wandb-mode", "offline", *RECIPE, *extra]
    print("$", " ".join(cmd), flush=True)
    tic = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - tic
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in records if "val" in r][-1]["val"]
    return {"fit": fit, "wall_s": round(wall, 1), **{k: final[k] for k in (
        "top1", "top5", "hit_at_1", "hit_at_10", "map_at_r", "effect_size", "num_queries")},
        "by_char_class": {cc: {k: m[k] for k in ("top1", "hit_at_10")} for cc, m in final["by_char_class"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("data/glyphs.db"))
    parser.add_argument("--out", type=Path, default=Path("runs/quality"))
    parser.add_argument("--fits", default="em,tight")
    args, extra = parser.parse_known_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"load average {os.getloadavg()}", flush=True)
    results = [run_fit(args.db, args.out, fit, CORE_LABELS, extra) for fit in args.fits.split(",")]
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\n{'fit':6} {'top1':>7} {'top5':>7} {'hit@1':>7} {'hit@10':>7} {'MAP@R':>7} {'effect':>7} {'queries':>8} {'wall':>8}")
    for r in results:
        print(f"{r['fit']:6} {r['top1']:7.4f} {r['top5']:7.4f} {r['hit_at_1']:7.4f} {r['hit_at_10']:7.4f} "
              f"{r['map_at_r']:7.4f} {r['effect_size']:7.3f} {r['num_queries']:8d} {r['wall_s']:7.0f}s")


if __name__ == "__main__":
    main()
