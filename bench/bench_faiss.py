"""Benchmark 3: validation retrieval (exact leave-one-out search to depth max(k, R) + hit@k and MAP@R): FAISS as
before vs FAISS and the AMX kernel, both settled into the canonical order.

All contenders compute `retrieval_metrics` on the same embeddings with the same thread count, interleaved
(each repeat runs all in turn, so load from elsewhere hits all alike):
- faiss_before: the search as it was before issue 9's kernel: FAISS IndexFlatIP lists in FAISS's own order
  (fp32 near-ties fall as its rounding and batch size make them fall), scored directly.
- faiss: `SEARCH_METHOD = "faiss"`: FAISS lists with _GUARD_ITEMS more per query, settled by
  `_canonical_neighbours` (exact fp64 order where fp32 cannot tell).
- amx: `SEARCH_METHOD = "amx"`: `glyph_train/evaluation/amx_search.py` (bf16 AMX tiles prefilter, exact fp32
  scores decide), settled the same way. Needs an AMX CPU and a C++ compiler.
Reports median seconds, ratios, whether faiss and amx give identical metrics (JSON) and how far faiss_before is.

Embeddings: a trained export's embeddings of a seeded sample of a glyphs.db (`--export DIR --db DB --limit N`,
every label of the sample, as validation embeds them; saved to `--embeddings FILE.npz` when that is given too),
`--embeddings FILE.npz` alone (arrays `embeddings` (N, D) and `labels` (N,)), or clustered synthetic vectors
(`--n`, `--dim`, `--labels`, `--noise`).

    python bench/bench_faiss.py [--export DIR --db DB --limit 100000] [--embeddings FILE.npz] [--n 100000 --dim 128 --labels 2000 --noise 2] [--k 10] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from glyph_train.evaluation import amx_search, metrics
from glyph_train.evaluation.metrics import retrieval_metrics


def clustered_embeddings(n: int, dim: int, num_labels: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around random centres; noise > 1 (per coordinate, centres have 1) makes clusters overlap."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_labels, dim)).astype(np.float32)
    labels = rng.integers(0, num_labels, size=n)
    x = centres[labels] + noise * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


def retrieval_faiss_before(embeddings: np.ndarray, labels: np.ndarray, k: int) -> dict:
    """retrieval_metrics as it was computed before: FAISS's lists to depth max(k, R), in FAISS's order."""
    x = metrics.normalise(embeddings)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    cutoffs = sorted({c for c in (*metrics.HIT_CUTOFFS, k) if c <= k})
    values = {f"hit_at_{c}": np.zeros(n) for c in cutoffs} | {"precision_at_1": np.zeros(n), "map_at_r": np.zeros(n)}
    r = np.zeros(n, dtype=np.int64)
    known = labels >= 0
    _, inverse, counts = np.unique(labels[known], return_inverse=True, return_counts=True)
    r[known] = counts[inverse] - 1
    queries = np.flatnonzero(r > 0)
    depth = np.minimum(np.maximum(k, r[queries]), n - 1)
    index = metrics._build_index(x)
    for rows, width in metrics._faiss_plan(np.arange(len(queries)), depth):
        _, nbr = metrics._faiss_neighbours(index, x, queries[rows], width)
        metrics._score_queries(values, queries[rows], nbr, labels, r, cutoffs)
    out = {name: float(v[queries].mean()) for name, v in values.items()}
    return out | {"num_queries": len(queries), "num_without_positive": int(n - len(queries))}


def embed_sample(export: Path, db: Path, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The export's embeddings of `limit` glyphs of `db` (GlyphFilter's seeded sample), labels as ids."""
    from glyph_train.corpus.db import GlyphFilter
    from glyph_train.evaluation.evaluate import embed_selection
    from glyph_train.model.export import load_export

    model, _, config = load_export(export)
    _, emb, names, _, _ = embed_selection(model, db, GlyphFilter(limit=limit, seed=0), int(config["img_size"]),
                                          config.get("fit", "tight"), 256)
    return emb.astype(np.float32), np.unique(np.asarray(names), return_inverse=True)[1].astype(np.int64)


def with_method(method: str, x: np.ndarray, labels: np.ndarray, k: int) -> dict:
    metrics.SEARCH_METHOD = method
    try:
        return retrieval_metrics(x, labels, k)
    finally:
        metrics.SEARCH_METHOD = "auto"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, help="a trained export: embed --limit glyphs of --db with it")
    parser.add_argument("--db", type=Path)
    parser.add_argument("--limit", type=int, default=100_000)
    parser.add_argument("--embeddings", help="npz with arrays embeddings (N, D) and labels (N,): read, or written "
                                             "when --export is given; else synthetic vectors")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--labels", type=int, default=2000, help="clusters/labels (about n/labels items each)")
    parser.add_argument("--noise", type=float, default=2.0, help="per-coordinate noise around unit-variance centres")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.export:
        x, labels = embed_sample(args.export, args.db, args.limit)
        if args.embeddings:
            np.savez(args.embeddings, embeddings=x, labels=labels)
    elif args.embeddings:
        data = np.load(args.embeddings)
        x, labels = data["embeddings"].astype(np.float32), data["labels"].astype(np.int64)
    else:
        x, labels = clustered_embeddings(args.n, args.dim, args.labels, args.noise, args.seed)
    contenders = {"faiss_before": lambda: retrieval_faiss_before(x, labels, args.k),
                  "faiss": lambda: with_method("faiss", x, labels, args.k)}
    amx_ok, amx_reason = amx_search.available()
    if amx_ok:
        contenders["amx"] = lambda: with_method("amx", x, labels, args.k)

    # Same thread count for all: FAISS's OpenMP loops, torch's intra-op pool (the kernel's threads) and BLAS.
    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    results: dict[str, dict] = {}
    with threadpool_limits(limits=args.threads):
        for _ in range(args.repeats):
            for name, fn in contenders.items():
                tic = time.perf_counter()
                results[name] = fn()
                times[name].append(time.perf_counter() - tic)
        load = os.getloadavg()

    med = {name: statistics.median(t) for name, t in times.items()}
    before = results["faiss_before"]
    result = {
        "embeddings": f"{args.export} on {args.limit} glyphs of {args.db}" if args.export else args.embeddings or f"synthetic n={args.n} dim={args.dim} labels={args.labels} noise={args.noise}",
        "n": int(len(x)), "dim": int(x.shape[1]), "k": args.k, "threads": args.threads, "repeats": args.repeats,
        "amx": amx_reason, "faiss_version": faiss.__version__, "loadavg_at_end": load,
        "median_seconds": med,
        "runs": times,
        "metrics": results,
        "faiss_before_max_abs_difference": max(abs(before[m] - results["faiss"][m]) for m in before),
    }
    if amx_ok:
        result["speedup_amx_vs_faiss_before"] = med["faiss_before"] / med["amx"]
        result["speedup_amx_vs_faiss"] = med["faiss"] / med["amx"]
        result["amx_and_faiss_identical"] = json.dumps(results["amx"]) == json.dumps(results["faiss"])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
