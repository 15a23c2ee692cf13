"""Benchmark 1: rasterising glyphs/s on one core, skia renderer vs the old PIL approach, in the same run.

The baseline is how glyphs used to be rasterised: curves flattened into line segments in Python, each
subpath filled with PIL's ImageDraw.polygon at 2x supersampling (holes cleared by orientation), then
downsampled. Both paths start from the same contours JSON text, as stored in glyphs.db.

    python bench/bench_raster.py [--glyphs 400] [--repeats 5] [--size 128]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
from fontTools.pens.recordingPen import DecomposingRecordingPen
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from dbfactory import pen_to_contours  # noqa: E402

from glyph_train.cache.raster import RenderParams, _build_path, _canvas, _loads, _matrix, parse_contours, render

FAMILIES = ("roboto", "amiri", "lora", "noto_sans_arabic", "playfair_display", "noto_serif")


def family_files(family: str) -> list[Path]:
    (ep,) = [e for e in entry_points(group="fontpkg.family") if e.name == family]
    return sorted(Path(ep.load().__file__).parent.joinpath("files").glob("*.ttf"))


def real_glyphs(n: int) -> list[str]:
    """n contours JSON strings, cmap characters of several real fonts (Latin and Arabic, quadratic)."""
    per_font = max(1, n // len(FAMILIES))
    out: list[str] = []
    for fam in FAMILIES:
        font = TTFont(family_files(fam)[0])
        gs = font.getGlyphSet()
        names = sorted(set(font.getBestCmap().values()))
        step = max(1, len(names) // per_font)
        for name in names[::step][:per_font]:
            pen = DecomposingRecordingPen(gs)
            gs[name].draw(pen)
            if pen.value:
                out.append(json.dumps(pen_to_contours(pen.value)))
    return out


# ---- the old way -------------------------------------------------------------------------------

def _flatten(contours: list, steps: int = 8) -> list[list[tuple[float, float]]]:
    polys = []
    for sub in contours:
        pts: list[tuple[float, float]] = []
        for op, args in sub:
            if op in ("moveTo", "lineTo"):
                pts.append(tuple(args[0]))
            elif op == "curveTo":
                (x0, y0), (x1, y1), (x2, y2), (x3, y3) = pts[-1], *args
                for i in range(1, steps + 1):
                    t = i / steps
                    u = 1 - t
                    pts.append((u**3 * x0 + 3 * u * u * t * x1 + 3 * u * t * t * x2 + t**3 * x3,
                                u**3 * y0 + 3 * u * u * t * y1 + 3 * u * t * t * y2 + t**3 * y3))
            elif op == "qCurveTo":
                offs, end = args[:-1], args[-1]
                if end is None:
                    end = ((offs[0][0] + offs[-1][0]) / 2, (offs[0][1] + offs[-1][1]) / 2)
                    pts.append(end)
                for k, (cx, cy) in enumerate(offs):
                    nx, ny = end if k == len(offs) - 1 else ((cx + offs[k + 1][0]) / 2, (cy + offs[k + 1][1]) / 2)
                    x0, y0 = pts[-1]
                    for i in range(1, steps + 1):
                        t = i / steps
                        u = 1 - t
                        pts.append((u * u * x0 + 2 * u * t * cx + t * t * nx, u * u * y0 + 2 * u * t * cy + t * t * ny))
        if len(pts) > 2:
            polys.append(pts)
    return polys


def _area(p: list[tuple[float, float]]) -> float:
    return 0.5 * sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(p, p[1:] + p[:1]))


def render_pil(text: str, size: int, resample: int = Image.LANCZOS, margin: float = 0.08) -> np.ndarray:
    polys = _flatten(json.loads(text))
    xs = [x for p in polys for x, _ in p]
    ys = [y for p in polys for _, y in p]
    big = size * 2
    scale = big * (1 - 2 * margin) / max(max(xs) - min(xs), max(ys) - min(ys), 1e-6)
    cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    areas = [_area(p) for p in polys]
    outer_sign = np.sign(areas[int(np.argmax(np.abs(areas)))])
    # Largest first; contours wound against the outer one are holes.
    for a, p in sorted(zip(areas, polys), key=lambda t: -abs(t[0])):
        xy = [(big / 2 + (x - cx) * scale, big / 2 - (y - cy) * scale) for x, y in p]
        draw.polygon(xy, fill=255 if np.sign(a) == outer_sign else 0)
    return np.asarray(img.resize((size, size), resample))


# ---- timing ------------------------------------------------------------------------------------

def rate(fn, items: list) -> float:
    t0 = time.perf_counter()
    for g in items:
        fn(g)
    return len(items) / (time.perf_counter() - t0)


def interleaved(fns: dict, items: list, repeats: int) -> dict[str, list[float]]:
    """Per-repeat glyphs/s for each fn, alternating fns within each repeat so that load from other
    processes on the machine hits all of them alike."""
    rates: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            rates[k].append(rate(fn, items))
    return rates


def skia_stages(glyphs: list[str], params: RenderParams, repeats: int) -> dict[str, float]:
    """Median microseconds per glyph spent in each stage of render(): where the time goes."""
    data = [_loads(g) for g in glyphs]
    paths = [_build_path(d) for d in data]
    for p in paths:
        p.transform(_matrix(p.computeTightBounds(), params, None))
    c = _canvas(params.img_size)
    stages = {
        "JSON parse": (_loads, glyphs),
        "path build": (_build_path, data),
        "skia fill": (lambda p: c.canvas.drawPath(p, c.paint), paths),
    }
    return {k: 1e6 / statistics.median(rate(f, items) for _ in range(repeats)) for k, (f, items) in stages.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--glyphs", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as the target says
    glyphs = real_glyphs(args.glyphs)
    params = RenderParams(img_size=args.size, fit="tight")
    segs = sum(len(s) for g in glyphs for s in parse_contours(g))
    print(f"{len(glyphs)} glyphs from {', '.join(FAMILIES)}; {segs / len(glyphs):.1f} segments/glyph; "
          f"{args.size}px tight fit; {args.repeats} interleaved repeats; 1 core")
    rates = interleaved(
        {
            "skia renderer": lambda g: render(g, params),
            "PIL baseline (LANCZOS)": lambda g: render_pil(g, args.size, Image.LANCZOS),
            "PIL baseline (BOX)": lambda g: render_pil(g, args.size, Image.BOX),
        },
        glyphs,
        args.repeats,
    )
    for k, v in rates.items():
        print(f"{k:24s}: {statistics.median(v):8.0f} glyphs/s  ({1e6 / statistics.median(v):6.1f} us/glyph)")
    skia = rates["skia renderer"]
    for base in ("PIL baseline (LANCZOS)", "PIL baseline (BOX)"):
        ratio = statistics.median(s / b for s, b in zip(skia, rates[base]))
        print(f"speed-up vs {base:22s}: {ratio:5.1f}x  (median of per-repeat ratios; target >= 20x)")
    stages = skia_stages(glyphs, params, args.repeats)
    print("skia render() stages, us/glyph: " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))


if __name__ == "__main__":
    main()
