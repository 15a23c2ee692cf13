"""How `glyph-train serve` holds up on a large index and a large font: request latencies (p50/p99) and page
sizes through Flask's test client, on a synthetic index of N glyph rows (default 1M; vectors random,
unit-norm, 128-d, one per 4 rows as identical outlines share one) beside the same index cut to 10k rows,
and the review page of a synthetic 5,000-glyph font. Only the search side is exercised on the index: the
export is a labels.json + config.json pair (the server never loads the model itself).

    python bench/bench_serve.py [--rows 1000000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa

from glyph_train.inference.index import GlyphIndex, SCHEMA, save_index
from glyph_train.inference.label_font import DEFAULT_MIN_CONFIDENCE, FontLabels, GlyphLabel
from glyph_train.serve.app import ServeOptions, create_app
from glyph_train.serve.review import Upload

DIM = 128
LABELS = [f"{cp}_isol" for cp in range(0x41, 0x5B)] + [f"{cp}_{f}" for cp in range(0x628, 0x64B)
                                                        for f in ("isol", "init", "medi", "fina")]


def build_index(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    vectors = max(1, rows // 4)
    vec = rng.standard_normal((vectors, DIM)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(DIM)
    index.add(vec)
    families = np.array([f"Family {i:05d}" for i in range(max(1, rows // 200))])
    label_ids = np.arange(rows) % len(LABELS)  # every family (200 rows) has every label
    labels = np.array(LABELS)[label_ids]
    columns = {
        "vector": pa.array(rng.integers(0, vectors, rows), pa.int64()), "source": pa.array(["font"] * rows),
        "db": pa.array([""] * rows), "font": pa.array(families[np.arange(rows) // 200 % len(families)]),
        "font_file": pa.array(["/nonexistent/font.ttf"] * rows), "face_index": pa.array(np.zeros(rows, np.int32)),
        "instance": pa.array([""] * rows), "family": pa.array(families[np.arange(rows) // 200 % len(families)]),
        "style": pa.array(["Regular"] * rows), "glyph": pa.array([f"g{i}" for i in range(rows)]),
        "glyph_id": pa.array(np.arange(rows, dtype=np.int64)), "label": pa.array(labels),
        "predicted_label": pa.array(labels), "confidence": pa.array(rng.random(rows, dtype=np.float32)),
        "outline_hash": pa.array([""] * rows), "upem": pa.array(np.full(rows, 1000.0)),
        "ascent": pa.array(np.full(rows, 800.0)), "descent": pa.array(np.full(rows, -200.0)),
    }
    table = pa.table([columns[name] for name in SCHEMA.names], schema=SCHEMA)
    save_index(path, GlyphIndex(index, table, {"factory": "Flat", "fit": "em", "img_size": 64, "dim": DIM}))


def fake_export(path: Path) -> None:
    path.mkdir()
    (path / "labels.json").write_text(json.dumps(LABELS))
    (path / "config.json").write_text(json.dumps({"fit": "em", "img_size": 64}))


def timed(client, method: str, url: str, repeat: int, **kw) -> dict:
    times, size = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        res = getattr(client, method)(url, **kw)
        times.append(time.perf_counter() - start)
        assert res.status_code in (200, 302), (url, res.status_code, res.get_data(as_text=True)[:300])
        size = len(res.data)
    times.sort()
    return {"p50_ms": 1000 * statistics.median(times), "p99_ms": 1000 * times[min(len(times) - 1, int(0.99 * len(times)))],
            "bytes": size}


def synthetic_font(n: int, seed: int = 0) -> FontLabels:
    rng = np.random.default_rng(seed)
    glyphs = []
    for gid in range(1, n + 1):
        probs = np.sort(rng.dirichlet(np.ones(8)))[::-1][:5]
        top5 = [(LABELS[int(j)], float(p)) for j, p in zip(rng.choice(len(LABELS), 5, replace=False), probs)]
        glyphs.append(GlyphLabel(f"glyph{gid:05d}", gid, top5[0][0], top5[0][1], top5[0][0], top5))
    return FontLabels(Path("font.ttf"), "Synthetic", "Regular", glyphs, [])


def run_index(rows: int, repeat: int, tmp: Path) -> dict:
    index = tmp / f"index-{rows}"
    start = time.perf_counter()
    build_index(index, rows)
    built = time.perf_counter() - start
    (tmp / "uploads").mkdir(exist_ok=True)
    start = time.perf_counter()
    app = create_app(ServeOptions(index, tmp / "export", tmp / "uploads", DEFAULT_MIN_CONFIDENCE))
    startup = time.perf_counter() - start
    client = app.test_client()
    out = {"rows": rows, "build_s": built, "startup_s": startup}
    for name, url in (("grid page /search", "/search"),
                      ("char, all fonts", "/api/search?char=A&k=12"),
                      ("char, one family", "/api/search?char=%D8%A8&form=init&family=Family%2000042&k=12"),
                      ("from a result (row)", f"/api/search?row={rows // 2}&k=12"),
                      ("results page (HTML)", "/search?char=A&k=48"),
                      ("family picker", "/api/families?q=family%20001")):
        out[name] = timed(client, "get", url, repeat)
    return out


def run_font(n: int, repeat: int, tmp: Path) -> dict:
    app = create_app(ServeOptions(tmp / "index-10000", tmp / "export", tmp / "uploads", DEFAULT_MIN_CONFIDENCE))
    reviews = app.extensions["glyph_train"]["reviews"]
    up = Upload("0123456789abcdef", "font.ttf", tmp / "uploads", tmp / "uploads" / "font.ttf", status="ready",
                labels=synthetic_font(n))
    reviews._uploads[up.id] = up
    client = app.test_client()
    out = {"glyphs": n}
    out["review page 1 (100 rows)"] = timed(client, "get", f"/review/{up.id}", repeat)
    out["review page 50"] = timed(client, "get", f"/review/{up.id}?page=50", repeat)
    out["decision"] = timed(client, "post", f"/api/review/{up.id}/glyphs/7", repeat, json={"action": "change", "label": "66_isol"})
    out["filter by label"] = timed(client, "get", f"/review/{up.id}?q=1576", repeat)
    start = time.perf_counter()
    reviews.write_csv(up)
    out["labels.csv (write)"] = {"p50_ms": 1000 * (time.perf_counter() - start), "bytes": (up.folder / "labels.csv").stat().st_size}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--font-glyphs", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", file=sys.stderr)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        fake_export(tmp / "export")
        results = [run_index(10_000, args.repeat, tmp), run_index(args.rows, args.repeat, tmp)]
        font = run_font(args.font_glyphs, args.repeat, tmp)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    header = " | ".join(f"{r['rows']:,} rows: p50 / p99 ms (bytes)" for r in results)
    print(f"\n| request | {header} |")
    print("|---|" + "---|" * len(results))
    for key in ("startup_s",):
        print("| app start (s) | " + " | ".join(f"{r[key]:.1f}" for r in results) + " |")
    for key in [k for k in results[0] if isinstance(results[0][k], dict)]:
        print(f"| {key} | " + " | ".join(f"{r[key]['p50_ms']:.0f} / {r[key]['p99_ms']:.0f} ({r[key]['bytes']:,})"
                                         for r in results) + " |")
    print(f"\n| {font['glyphs']:,}-glyph font | p50 ms (bytes) |\n|---|---|")
    for key, v in font.items():
        if isinstance(v, dict):
            print(f"| {key} | {v['p50_ms']:.0f} ({v['bytes']:,}) |")
    print(f"\npeak RSS {rss:,.0f} MB; load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
