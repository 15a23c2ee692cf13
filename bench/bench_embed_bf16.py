"""`glyph-train embed --bf16` against fp32 in one run: speed, and how much the look-alikes and labels change.

A trained export (the vectors of random weights would say nothing about search) embeds the same font files
through the real command path (`inference.embed.embed`) in fp32 and under bf16 autocast, alternating, medians.
Then, over every distinct outline (the two indexes hold them in the same order): recall@10 of the bf16 index
against the fp32 one (each outline's 10 nearest other outlines found in each, the share in common), each
index's precision@10 by the fonts' own labels (over outlines with a known label: the share of their 10 nearest
with the same label; what a look-alike search is for), and the share of glyphs whose predicted label is the same.

    python bench/bench_embed_bf16.py --checkpoint RUN/export FONT [FONT ...] [--repeats 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from glyph_train.inference.embed import embed

K = 10


def neighbours(index, k: int = K) -> np.ndarray:
    """Each vector's k nearest other vectors in its own (exact) index."""
    vectors = index.reconstruct_n(0, index.ntotal)
    _, found = index.search(vectors, k + 1)
    return np.array([[j for j in row if j != i][:k] for i, row in enumerate(found)])


def label_precision(gi, found: np.ndarray) -> float:
    """The share of each labelled outline's nearest outlines that carry its label (unlabelled ones skipped)."""
    label = {}
    for vector, known in zip(gi.table.column("vector").to_pylist(), gi.table.column("label").to_pylist()):
        label.setdefault(vector, known)
    hits = [np.mean([label[j] == label[i] for j in row]) for i, row in enumerate(found) if label[i]]
    return float(np.mean(hits))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fonts", nargs="+", type=Path)
    ap.add_argument("--checkpoint", required=True, type=Path, metavar="EXPORT")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench_embed_bf16."))
    seconds: dict[bool, list[float]] = {False: [], True: []}
    indexes = {}
    print(f"load {os.getloadavg()[0]:.1f}; {len(args.fonts)} fonts; export {args.checkpoint}", flush=True)
    try:
        for _ in range(args.repeats):
            for bf16 in (False, True):
                out = work / f"index-{bf16}"
                shutil.rmtree(out, ignore_errors=True)
                t = time.perf_counter()
                indexes[bf16] = embed(args.checkpoint, out, inputs=[str(f) for f in args.fonts], bf16=bf16)
                seconds[bf16].append(time.perf_counter() - t)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    fp32, bf16 = indexes[False], indexes[True]
    if fp32.table.column("outline_hash").to_pylist() != bf16.table.column("outline_hash").to_pylist():
        raise SystemExit("bench_embed_bf16: the two indexes hold other glyphs; nothing to compare")
    found32, found16 = neighbours(fp32.index), neighbours(bf16.index)
    same = np.mean([len(set(a) & set(b)) / K for a, b in zip(found32, found16)])
    labels = np.mean(np.array(fp32.table.column("predicted_label").to_pylist())
                     == np.array(bf16.table.column("predicted_label").to_pylist()))
    glyphs = len(fp32.table)
    e32, e16 = statistics.median(seconds[False]), statistics.median(seconds[True])
    print(f"load after {os.getloadavg()[0]:.1f}")
    print(json.dumps({"glyphs": glyphs, "vectors": int(fp32.index.ntotal),
                      "fp32_s": [round(s, 2) for s in seconds[False]], "bf16_s": [round(s, 2) for s in seconds[True]],
                      "fp32_glyphs_per_s": round(glyphs / e32, 1), "bf16_glyphs_per_s": round(glyphs / e16, 1),
                      "speedup": round(e32 / e16, 3), f"recall_at_{K}_vs_fp32": round(float(same), 4),
                      f"fp32_label_precision_at_{K}": round(label_precision(fp32, found32), 4),
                      f"bf16_label_precision_at_{K}": round(label_precision(bf16, found16), 4),
                      "same_predicted_label": round(float(labels), 4)}, indent=1))


if __name__ == "__main__":
    main()
