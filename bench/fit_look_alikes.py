"""Fit label-font's look-alike prior: how each pair of look-alikes compares in size within the training fonts.

For every font of the glyphs.db (read-only) outside bench_unseen's held-out families (so the label-font bench
scores fonts the table never saw) and not excluded: each label of inference/look_alike_prior.LOOK_ALIKES it
draws, its ink box (width, top, bottom in em); per pair of a set, how many fonts' a compared with their b in
each cell (wider / as wide / narrower, and so on for top and bottom, within --tolerance em). Writes the table
label-font reads (glyph_train/resources/look_alikes.json) and prints the share of fonts in each pair's
commonest cell.

    python bench/fit_look_alikes.py --db runs/s26/big/glyphs.db [--out glyph_train/resources/look_alikes.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_unseen import held_out_of  # noqa: E402

from glyph_train.corpus.db import open_readonly  # noqa: E402
from glyph_train.inference.look_alike_prior import LOOK_ALIKES, TABLE_FILE, fit_table, ink_box  # noqa: E402


def font_boxes(db: Path) -> tuple[list[dict], int]:
    """Per training font: label -> ink box (its first glyph of the label); and how many outlines were unusable."""
    labels = sorted({a for labels in LOOK_ALIKES for a in labels})
    conn = open_readonly(db)
    try:
        rows = conn.execute(
            "SELECT f.file_hash, f.family_name, f.upem, g.label, g.contours FROM glyphs g "
            "JOIN fonts f ON g.f_id = f.file_hash WHERE COALESCE(f.excluded, 0) = 0 AND f.upem > 0 "
            f"AND g.label IN ({','.join('?' * len(labels))}) ORDER BY g.glyph_id", labels).fetchall()
    finally:
        conn.close()
    fonts, unusable = defaultdict(dict), 0
    for font, family, upem, label, contours in rows:
        if held_out_of(family) or label in fonts[font]:
            continue
        try:
            fonts[font][label] = ink_box(contours, upem)
        except ValueError:
            unusable += 1
    return [f for f in fonts.values() if f], unusable


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, type=Path, help="the training glyphs.db (read only)")
    ap.add_argument("--out", type=Path, default=REPO / "glyph_train" / "resources" / TABLE_FILE)
    ap.add_argument("--tolerance", type=float, default=0.01, help="sizes closer than this (em) compare as equal")
    args = ap.parse_args()
    fonts, unusable = font_boxes(args.db)
    table = fit_table(fonts, args.tolerance)
    about = (f"bench/fit_look_alikes.py on {len(fonts)} fonts of {args.db.name} outside bench_unseen's held-out "
             "families: per look-alike pair (a b), how many fonts' a compared with their b in each cell of "
             "inference/look_alike_prior.comparison")
    data = table.to_json()
    pairs = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in data["pairs"].items())  # a pair a line
    args.out.write_text(f'{{\n "about": {json.dumps(about)},\n "tolerance_em": {data["tolerance_em"]},\n'
                        f' "pairs": {{\n{pairs}\n }}\n}}\n')
    print(f"fit_look_alikes: {len(fonts)} fonts, {unusable} unusable outlines skipped; wrote {args.out}")
    for (a, b), counts in table.counts.items():
        print(f"  {a} {b}: {int(counts.sum())} fonts, commonest cell {int(counts.argmax())} in "
              f"{counts.max() / max(counts.sum(), 1):.1%}")


if __name__ == "__main__":
    main()
