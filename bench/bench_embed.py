"""`glyph-train embed` throughput on this CPU, next to its two parts measured alone in the same run.

An export of the default architecture (levit_128s, 128 px, em fit; random weights: speed does not depend on
them) embeds font files through the real command path (`inference.embed.embed`: draw every glyph with
HarfBuzz, dedupe, render, forward, index, write). Baselines in the same run, on the same glyphs: drawing +
rendering alone, and the model's forward pass alone on those images at the same batch size. Runs alternate
(embed, parts, embed, parts, ...); medians.

    python bench/bench_embed.py [FONT ...] [--img-size 128] [--model levit_128s] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fontfactory import fontpkg_file  # noqa: E402

from glyph_train.cache.pipeline import model_outputs  # noqa: E402
from glyph_train.inference.embed import embed  # noqa: E402
from glyph_train.inference.predictor import Predictor  # noqa: E402
from glyph_train.inference.sources import face_glyphs, font_faces  # noqa: E402
from glyph_train.model.export import save_export  # noqa: E402
from glyph_train.model.network import GlyphModel  # noqa: E402

DEFAULT_FONTS = (("fontpkg_almarai", "Almarai-Regular.ttf"), ("fontpkg_abril_fatface", "AbrilFatface-Regular.ttf"),
                 ("fontpkg_bebas_neue", "BebasNeue-Regular.ttf"), ("fontpkg_lobster", "Lobster-Regular.ttf"))


def default_fonts() -> list[Path]:
    return [fontpkg_file(package, name) for package, name in DEFAULT_FONTS]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fonts", nargs="*", type=Path)
    ap.add_argument("--model", default="levit_128s")
    ap.add_argument("--img-size", type=int, default=128)
    ap.add_argument("--classes", type=int, default=4789)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fonts = args.fonts or default_fonts()
    work = Path(tempfile.mkdtemp(prefix="bench_embed."))
    try:
        model = GlyphModel(args.model, num_classes=args.classes, img_size=args.img_size)
        save_export(work / "export", model, [f"{i}_isol" for i in range(args.classes)],
                    {"img_size": args.img_size, "fit": "em", "model": args.model})
        predictor = Predictor(work / "export", batch_size=args.batch_size)
        print(f"load {os.getloadavg()[0]:.1f}; {len(fonts)} fonts; {args.model} {args.img_size}px; "
              f"{args.threads} threads", flush=True)

        def parts() -> tuple[int, float, float]:
            t = time.perf_counter()
            records = [r for path in fonts for face in font_faces(path) for r in face_glyphs(face)[0]]
            unique = {r.outline_hash + repr(r.em): r for r in records}
            done = predictor.render((k, r.contours, r.em) for k, r in unique.items())
            t_render = time.perf_counter() - t
            t = time.perf_counter()
            model_outputs(predictor.model, done.images, args.batch_size)
            return len(records), t_render, time.perf_counter() - t

        embed_s, render_s, forward_s, glyphs = [], [], [], 0
        for _ in range(args.repeats):
            out = work / "index"
            t = time.perf_counter()
            gi = embed(work / "export", out, inputs=[str(f) for f in fonts[:]], batch_size=args.batch_size)
            embed_s.append(time.perf_counter() - t)
            embedded = len(gi.table)
            shutil.rmtree(out)
            n, r, f = parts()
            render_s.append(r)
            forward_s.append(f)
            glyphs = n
        e, r, f = (statistics.median(x) for x in (embed_s, render_s, forward_s))
        print(f"load after {os.getloadavg()[0]:.1f}")
        result = {"glyphs_embedded": embedded, "glyphs_drawn_by_parts": glyphs, "vectors": int(gi.index.ntotal),
                  "embed_s": round(e, 2), "embed_glyphs_per_s": round(embedded / e, 1),
                  "draw_render_s": round(r, 2), "forward_s": round(f, 2),
                  "embed_over_parts": round(e / (r + f), 3)}
        print(json.dumps(result, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
