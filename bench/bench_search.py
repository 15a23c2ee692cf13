"""Search latency and recall of the index kinds `glyph-train embed --index-factory` offers, side by side.

N clustered L2-normalised vectors (bench_faiss's generator), Q held-out queries searched one at a time (as
`glyph-train search` does): per index kind the build time, p50/p99 latency per query and recall@k against
the exact `Flat` results of the same run. Every index is built through glyph_train.inference.index (the same
factory strings, training sample and search parameters the command uses). Contenders are queried in
interleaved rounds so machine load hits all alike.

    python bench/bench_search.py [--n 1000000] [--dim 128] [--queries 1000] [--k 10] [--threads N]
        [--factories "Flat;HNSW32;IVF1024,Flat;IVF4096,PQ32"]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import faiss
import numpy as np

from bench_faiss import clustered_embeddings  # bench/ is on sys.path when run as a script
from glyph_train.inference.index import add_vectors, new_index

DEFAULT_FACTORIES = ("Flat", "HNSW32", "IVF1024,Flat", "IVF4096,PQ32")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--labels", type=int, default=5000)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=0, help="FAISS OpenMP threads (0: its default)")
    ap.add_argument("--factories", default=";".join(DEFAULT_FACTORIES),
                    help="index kinds separated by ';' (factory strings contain commas)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    factories = [f.strip() for f in args.factories.split(";") if f.strip()]
    x, _ = clustered_embeddings(args.n + args.queries, args.dim, args.labels, args.noise, seed=0)
    base, queries = x[: args.n], x[args.n:]
    print(f"n={args.n:,} dim={args.dim} queries={args.queries} k={args.k} threads={faiss.omp_get_max_threads()} "
          f"load={os.getloadavg()[0]:.1f}", flush=True)

    indexes, build = {}, {}
    for spec in factories:
        t = time.perf_counter()
        index = new_index(args.dim, spec)
        add_vectors(index, base, spec)
        build[spec] = time.perf_counter() - t
        indexes[spec] = index
        print(f"built {spec} in {build[spec]:.1f} s", flush=True)

    exact = indexes.get("Flat") or new_index(args.dim, "Flat")
    if "Flat" not in indexes:
        add_vectors(exact, base, "Flat")
    _, truth = exact.search(queries, args.k)

    latencies = {spec: [] for spec in factories}
    found = {}
    for _ in range(args.rounds):
        for spec, index in indexes.items():
            ids = np.empty((args.queries, args.k), dtype=np.int64)
            for i in range(args.queries):
                t = time.perf_counter()
                _, ids[i: i + 1] = index.search(queries[i: i + 1], args.k)
                latencies[spec].append(time.perf_counter() - t)
            found[spec] = ids
    rows = []
    for spec in factories:
        lat = np.array(latencies[spec]) * 1e3
        recall = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(found[spec], truth)])
        rows.append({"index": spec, "build_s": round(build[spec], 1), "p50_ms": round(float(np.percentile(lat, 50)), 3),
                     "p99_ms": round(float(np.percentile(lat, 99)), 3), f"recall_at_{args.k}": round(float(recall), 4),
                     "bytes_per_vector": round(faiss.serialize_index(indexes[spec]).nbytes / args.n, 1)})
    print(f"load after: {os.getloadavg()[0]:.1f}")
    print("| index | build s | p50 ms | p99 ms | recall@%d | bytes/vector |" % args.k)
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['index']} | {r['build_s']} | {r['p50_ms']} | {r['p99_ms']} | {r[f'recall_at_{args.k}']} | "
              f"{r['bytes_per_vector']} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
