"""Benchmark 2: random-access reads from the prepared cache, one process, shuffled indices.

Builds a glyphs.db from every installed fontpkg font (tests/dbfactory.py: Latin, digits, punctuation,
Arabic positional forms; about 15k glyphs), prepares it at 128 px, then reads images in a shuffled order:

  view[i]            images_view: a numpy view over the Arrow memory map, copied out per image
                     (what a DataLoader __getitem__ does)
  view[batch]        the same, gathering a batch of shuffled indices at once
  ds[i]["image"]     baseline: datasets' row access (decodes the nested list into Python lists)
  numpy-format ds    baseline 2: ds.with_format("numpy")[i]["image"]

The cache is warm in the page cache (it was just written), as it is after the first epoch of training.
Target: >= 20,000 images/s for the view.

    python bench/bench_cache.py [--workdir DIR] [--img-size 128] [--num-proc 2] [--reads 200000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from dbfactory import LATIN, fontpkg_specs, write_db  # noqa: E402

from glyph_train.cache.prepare import prepare  # noqa: E402
from glyph_train.cache.raster import RenderParams  # noqa: E402
from glyph_train.cache.reader import images_view  # noqa: E402
from glyph_train.corpus.db import GlyphFilter  # noqa: E402

EXTRA = "".join(chr(c) for c in range(0xC0, 0x180))  # Latin-1 supplement + Latin Extended-A letters


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, help="keep the DB and cache here (default: a temp dir)")
    ap.add_argument("--img-size", type=int, default=128)
    ap.add_argument("--num-proc", type=int, default=2)
    ap.add_argument("--reads", type=int, default=200_000, help="random reads through the view")
    ap.add_argument("--baseline-reads", type=int, default=5_000, help="random reads through ds[i] (slow)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_cache_"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "glyphs.db"
    res: dict = {"img_size": args.img_size}

    if not db.exists():
        t = time.perf_counter()
        info = write_db(db, fontpkg_specs(), LATIN + EXTRA)
        res["db_build_s"] = round(time.perf_counter() - t, 1)
        print(f"db: {info.rows:,} glyphs from {len(info.fonts)} fonts in {res['db_build_s']} s")

    t = time.perf_counter()
    data = prepare(db, work / "cache", RenderParams(img_size=args.img_size), "font", 0.1, 0, args.num_proc,
                   GlyphFilter())
    res["prepare_s"] = round(time.perf_counter() - t, 1)
    ds = data.train
    n = len(ds)
    res.update(rows=n, cache_hit=data.cache_hit)
    if not data.cache_hit:
        res["prepare_glyphs_per_s"] = round(rate(n + len(data.validation), res["prepare_s"]))

    t = time.perf_counter()
    view = images_view(ds)
    res["view_open_ms"] = round((time.perf_counter() - t) * 1e3, 2)
    res["chunks"] = len(view.chunks)
    rng = np.random.default_rng(0)
    order = np.concatenate([rng.permutation(n) for _ in range(-(-args.reads // n))])[: args.reads]

    checksum = 0
    t = time.perf_counter()
    for i in order.tolist():
        checksum += int(np.array(view[i])[0, 0])  # copy out, as a DataLoader item would
    res["view_item_per_s"] = round(rate(len(order), time.perf_counter() - t))

    batch = 256
    t = time.perf_counter()
    for k in range(0, len(order), batch):
        checksum += int(view[order[k: k + batch]][0, 0, 0])
    res["view_batch256_per_s"] = round(rate(len(order), time.perf_counter() - t))

    base = order[: args.baseline_reads].tolist()
    t = time.perf_counter()
    for i in base:
        checksum += int(np.asarray(ds[i]["image"], dtype=np.uint8)[0, 0])
    res["baseline_ds_item_per_s"] = round(rate(len(base), time.perf_counter() - t))

    nds = ds.with_format("numpy")
    t = time.perf_counter()
    for i in base:
        checksum += int(nds[i]["image"][0, 0])
    res["baseline_numpy_format_per_s"] = round(rate(len(base), time.perf_counter() - t))

    # Spot-check correctness on the shuffled indices.
    for i in order[:200].tolist():
        assert np.array_equal(view[i], np.asarray(ds[i]["image"], dtype=np.uint8))
    res["speedup_vs_ds_item"] = round(res["view_item_per_s"] / res["baseline_ds_item_per_s"], 1)
    res["target_20k_met"] = res["view_item_per_s"] >= 20_000
    print(json.dumps(res, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
