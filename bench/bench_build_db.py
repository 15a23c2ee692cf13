"""Benchmark 3: `glyph-train build-db --fontpkg` on the default corpus (setup.cfg extra `fonts`).

Builds into a fresh temporary DB, then re-runs on it (which must add nothing), and prints fonts/s,
glyphs/s and counts. CPU seconds (this process and its workers) and the load average are printed too:
on a shared machine wall-clock rates say as much about the neighbours as about build-db.

    python bench/bench_build_db.py [--jobs N] [--out glyphs.db]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from glyph_train.corpus.build_db import build_db, default_jobs


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="worker processes (default: CPUs)")
    parser.add_argument("--out", type=Path, help="keep the DB here (default: a temporary file, deleted)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "glyphs.db"
        if out.exists():
            raise SystemExit(f"{out} exists: the benchmark needs a fresh DB")
        load = os.getloadavg()[0]
        cpu = cpu_seconds()
        first = build_db(out, [], fontpkg=True, jobs=args.jobs)
        cpu = cpu_seconds() - cpu
        start = time.perf_counter()
        again = build_db(out, [], fontpkg=True, jobs=args.jobs)
        rerun = time.perf_counter() - start
        size_mb = out.stat().st_size / 1e6

    print(f"build-db --fontpkg, {args.jobs} jobs, {os.cpu_count()} CPUs, load average {load:.1f} at start")
    print(f"  fonts added      {first.fonts_added} ({first.fonts_skipped} skipped)")
    print(f"  glyphs           {first.glyphs}  ({first.labels} labels), DB {size_mb:.0f} MB")
    print(f"  wall             {first.seconds:.1f} s: {first.fonts_per_s:.1f} fonts/s, "
          f"{first.glyphs / first.seconds:.0f} glyphs/s  (target >= 5 fonts/s)")
    print(f"  CPU (all procs)  {cpu:.1f} s: {first.fonts_added / cpu:.1f} fonts per CPU-second")
    print(f"  re-run           {rerun:.1f} s, added {again.fonts_added}, already present {again.fonts_present}")


if __name__ == "__main__":
    main()
