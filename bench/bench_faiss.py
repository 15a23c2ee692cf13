"""Benchmark 3: exact leave-one-out top-k retrieval of 100k x 128 embeddings: FAISS vs the bf16 re-rank vs NumPy.

All sides do the same exact search in the same run, on the same data and thread count: every item queries
the whole set, its own index is removed (not its first hit), the k best remain.
- FAISS: `glyph_train.evaluation.metrics.nearest_neighbours(method="faiss")` (IndexFlatIP; BLAS + fused top-k heaps).
- bf16 re-rank: `nearest_neighbours(method="bf16")` (bf16 matmul + top (k + margin), exact fp32 re-rank, exact
  fallback for queries the bound cannot prove); what `auto` picks where the CPU has AMX / AVX512-BF16. Where
  bf16 is emulated (AVX2 only) it is far slower: use a smaller --n there.
- NumPy: chunks of queries @ all.T (BLAS), own index set to -inf, argpartition, sort of the k kept.

NumPy brute force over all 100k queries takes minutes, so by default it runs on a random subset of queries
(the gallery is always all N) and its full-set time is extrapolated linearly (cost is linear in the number of
queries). FAISS is timed on the same subset too (ratio like for like) and on all N. `--numpy-queries 0`
times NumPy on all N (-1 skips NumPy). Also reported: the whole `retrieval_metrics` (search to depth max(k, R)
+ MAP@R) with each method, and whether the two give identical metrics.

    python bench/bench_faiss.py [--n 100000] [--dim 128] [--labels 2000] [--noise 2] [--k 10] [--numpy-queries 10000] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import faiss
import numpy as np
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from glyph_train.evaluation import metrics
from glyph_train.evaluation.metrics import native_bf16_matmul, nearest_neighbours, retrieval_metrics


def clustered_embeddings(n: int, dim: int, num_labels: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around random centres; noise > 1 (per coordinate, centres have 1) makes clusters overlap."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_labels, dim)).astype(np.float32)
    labels = rng.integers(0, num_labels, size=n)
    x = centres[labels] + noise * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


def numpy_topk(x: np.ndarray, queries: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    scores = np.empty((len(queries), k), dtype=np.float32)
    index = np.empty((len(queries), k), dtype=np.int64)
    rows = np.arange(chunk)
    for s in range(0, len(queries), chunk):
        q = queries[s : s + chunk]
        sims = x[q] @ x.T
        sims[rows[: len(q)], q] = -np.inf  # leave one out by index
        top = np.argpartition(sims, -k, axis=1)[:, -k:]
        top_s = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_s, axis=1)
        index[s : s + chunk] = np.take_along_axis(top, order, axis=1)
        scores[s : s + chunk] = np.take_along_axis(top_s, order, axis=1)
    return scores, index


def timed_interleaved(fns: dict, repeats: int) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Run the contenders in turn, `repeats` rounds: load from anything else on the machine hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    results: dict[str, object] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            tic = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - tic)
    return times, results


def agreement(queries, f_scores, f_index, n_scores, n_index) -> dict:
    """Same neighbour sets, or different only where the scores tie within float32 rounding (two BLAS
    kernels sum the 128 products in different orders, so near-ties can swap at the k-th place)."""
    same_set = np.array([set(a) == set(b) for a, b in zip(f_index.tolist(), n_index.tolist())])
    score_gap = np.abs(f_scores - n_scores).max()
    return {"queries_with_identical_topk_sets": float(same_set.mean()),
            "max_abs_score_difference": float(score_gap),
            "agree": bool(score_gap < 1e-5 and not (f_index == queries[:, None]).any()
                          and not (n_index == queries[:, None]).any())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--labels", type=int, default=2000, help="clusters/labels (about n/labels items each)")
    parser.add_argument("--noise", type=float, default=2.0, help="per-coordinate noise around unit-variance centres")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--numpy-queries", type=int, default=10_000, help="NumPy query subset (0 = all n, -1 = skip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    # Same thread count for all: FAISS's OpenMP loops, torch's intra-op pool and every BLAS.
    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads):
        blas = [{k: info[k] for k in ("internal_api", "num_threads", "filepath")} for info in threadpool_info()]
        x, labels = clustered_embeddings(args.n, args.dim, args.labels, args.noise, args.seed)
        all_q = np.arange(args.n)
        contenders = {
            "faiss_all": lambda: nearest_neighbours(x, all_q, args.k, method="faiss"),
            "bf16_rerank_all": lambda: nearest_neighbours(x, all_q, args.k, method="bf16"),
        }
        sub = None
        if args.numpy_queries >= 0:
            sub = (all_q if not args.numpy_queries or args.numpy_queries >= args.n
                   else np.sort(np.random.default_rng(args.seed).choice(args.n, args.numpy_queries, replace=False)))
            contenders["faiss_subset"] = lambda: nearest_neighbours(x, sub, args.k, method="faiss")
            contenders["numpy_subset"] = lambda: numpy_topk(x, sub, args.k)
        times, out = timed_interleaved(contenders, args.repeats)
        retrieval, retrieval_seconds = {}, {}
        for method in ("faiss", "bf16"):
            metrics.SEARCH_METHOD = method
            tic = time.perf_counter()
            retrieval[method] = retrieval_metrics(x, labels, args.k)
            retrieval_seconds[method] = time.perf_counter() - tic
        load = os.getloadavg()

    med = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "n": args.n, "dim": args.dim, "k": args.k, "labels": args.labels, "noise": args.noise,
        "threads": args.threads, "faiss_omp_max_threads": faiss.omp_get_max_threads(), "cpu_count": os.cpu_count(),
        "native_bf16_matmul": native_bf16_matmul(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "faiss_version": faiss.__version__, "faiss_blas_threshold": faiss.cvar.distance_compute_blas_threshold,
        "blas": blas, "repeats": args.repeats, "loadavg_at_end": load,
        "median_seconds": med,
        "speedup_bf16_rerank_vs_faiss": med["faiss_all"] / med["bf16_rerank_all"],
        "rerank_vs_faiss_all_queries": agreement(all_q, *out["faiss_all"], *out["bf16_rerank_all"]),
        "retrieval_metrics_seconds": retrieval_seconds,
        "retrieval_metrics_identical": json.dumps(retrieval["faiss"]) == json.dumps(retrieval["bf16"]),
        "retrieval_metrics": {k: retrieval["faiss"][k] for k in ("hit_at_1", "hit_at_10", "map_at_r", "num_queries")},
        "runs": times,
    }
    if sub is not None:
        scale = args.n / len(sub)
        result.update({
            "numpy_queries": len(sub),
            "numpy_seconds_all_queries": med["numpy_subset"] * scale,
            "numpy_all_queries_is_extrapolated": scale != 1.0,
            "speedup_faiss_vs_numpy_same_queries": med["numpy_subset"] / med["faiss_subset"],
            "faiss_vs_numpy_subset": agreement(sub, *out["faiss_subset"], *out["numpy_subset"]),
        })
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
