"""Contours JSON (fontTools pen protocol, font units, y up) -> anti-aliased uint8 image, ink 255 on 0.

Skia does the scan conversion: nonzero winding, exact quadratic/cubic curves, analytic anti-aliasing.
A render is one path build plus one draw into a per-thread reused A8 surface, so the cost per glyph is
dominated by the fill itself rather than allocation.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import skia

# Bump whenever output pixels can change (fits, anti-aliasing, curve handling): caches key on it.
RENDERER_VERSION = "skia-1"

FITS = ("tight", "em")
_OPS = {"moveTo", "lineTo", "curveTo", "qCurveTo", "closePath", "endPath"}

Contours = list[list[tuple[str, list]]]


@dataclass(frozen=True)
class RenderParams:
    img_size: int = 128
    fit: str = "tight"  # "tight": bbox fills the frame; "em": font metrics fill it, relative size kept
    margin: float = 0.08  # fraction of the frame left empty on each side

    def __post_init__(self) -> None:
        if self.img_size < 1:
            raise ValueError(f"img_size must be positive, got {self.img_size}")
        if self.fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}, got {self.fit!r}")
        if not 0.0 <= self.margin < 0.5:
            raise ValueError(f"margin must be in [0, 0.5), got {self.margin}")


@dataclass(frozen=True)
class EmBox:
    """The font's vertical extent in font units; descent is negative (below the baseline)."""

    upem: float
    ascent: float
    descent: float


def em_box_from_metrics(
    upem: float | None,
    ascent: float | None,
    descent: float | None,
    typo_ascent: float | None = None,
    typo_descent: float | None = None,
) -> EmBox:
    """EmBox from a fonts row: OS/2 typo metrics when set (they are meant for layout), else hhea, else 0.8/-0.2 em."""
    upem = float(upem) if upem and upem > 0 else 1000.0
    for a, d in ((typo_ascent, typo_descent), (ascent, descent)):
        if a and d and a > 0:
            # Some fonts store the descender as a positive magnitude: normalise to below-baseline.
            return EmBox(upem, float(a), -abs(float(d)))
    return EmBox(upem, upem * 0.8, -upem * 0.2)


def _point(p: Any, where: str) -> tuple[float, float]:
    if not isinstance(p, (list, tuple)) or len(p) != 2:
        raise ValueError(f"{where}: point must be [x, y], got {p!r:.40}")
    x, y = p
    if isinstance(x, bool) or isinstance(y, bool) or not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
        raise ValueError(f"{where}: point coordinates must be numbers, got {p!r:.40}")
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"{where}: point coordinates must be finite, got {p!r:.40}")
    return float(x), float(y)


def _validate(data: Any) -> Contours:
    if not isinstance(data, list):
        raise ValueError(f"contours must be a list of subpaths, got {type(data).__name__}")
    out: Contours = []
    points = 0
    for i, sub in enumerate(data):
        if not isinstance(sub, list):
            raise ValueError(f"subpath {i} must be a list of [op, points], got {type(sub).__name__}")
        segs: list[tuple[str, list]] = []
        for j, seg in enumerate(sub):
            where = f"subpath {i} segment {j}"
            if not isinstance(seg, (list, tuple)) or len(seg) != 2:
                raise ValueError(f"{where}: must be [op, points]")
            op, payload = seg
            if op not in _OPS:
                raise ValueError(f"{where}: unknown op {op!r:.30}")
            if payload is None:
                payload = []
            if not isinstance(payload, list):
                raise ValueError(f"{where}: points must be a list")
            if op == "qCurveTo":
                # The chain's last point (the on-curve end) may be null: an all-off-curve contour.
                pts = [_point(p, where) for p in payload[:-1]]
                if payload:
                    pts.append(None if payload[-1] is None else _point(payload[-1], where))
            else:
                pts = [_point(p, where) for p in payload]
            need = {"moveTo": 1, "lineTo": 1, "curveTo": 3}.get(op)
            if need is not None and len(pts) != need:
                raise ValueError(f"{where}: {op} takes {need} point(s), got {len(pts)}")
            if op == "qCurveTo" and not pts:
                raise ValueError(f"{where}: qCurveTo needs at least one point")
            points += len(pts)
            segs.append((op, pts))
        if segs:
            out.append(segs)
    if not points:
        raise ValueError("contours are empty (no points)")
    return out


def parse_contours(text: str | bytes) -> Contours:
    """Parse and validate a contours JSON string; ValueError with a short reason if it is not a usable outline."""
    if text is None:
        raise ValueError("contours are NULL")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
        raise ValueError(f"contours are not valid JSON ({e})") from None
    return _validate(data)


def _build_path(contours: Sequence[Sequence[tuple[str, list]]]) -> skia.Path:
    """Font-unit skia.Path. qCurveTo chains are split into quads at implied on-curve midpoints."""
    path = skia.Path()
    path.setFillType(skia.PathFillType.kWinding)
    for sub in contours:
        start: tuple[float, float] | None = None
        cur: tuple[float, float] | None = None
        for op, pts in sub:
            if op == "moveTo":
                cur = start = tuple(pts[0])
                path.moveTo(*cur)
            elif op == "lineTo":
                p = tuple(pts[0])
                if cur is None:
                    path.moveTo(*p)
                    start = p
                else:
                    path.lineTo(*p)
                cur = p
            elif op == "curveTo":
                if cur is None:  # no current point: treat the first control as the start
                    path.moveTo(*pts[0])
                    start = tuple(pts[0])
                (x1, y1), (x2, y2), (x3, y3) = pts
                path.cubicTo(x1, y1, x2, y2, x3, y3)
                cur = (x3, y3)
            elif op == "qCurveTo":
                offs = list(pts[:-1])
                end = pts[-1]
                if end is None:
                    # All off-curve (TrueType): the contour starts and ends at the implied midpoint of
                    # the last and first off-curve points.
                    offs = list(pts[:-1])
                    if not offs:
                        continue
                    first, last = offs[0], offs[-1]
                    end = ((first[0] + last[0]) * 0.5, (first[1] + last[1]) * 0.5)
                    path.moveTo(*end)
                    start = cur = end
                elif cur is None:  # malformed (no current point): start the chain at its first point
                    first = offs.pop(0) if offs else end
                    path.moveTo(*first)
                    start = cur = tuple(first)
                if not offs:
                    path.lineTo(*end)
                else:
                    for k in range(len(offs) - 1):
                        a, b = offs[k], offs[k + 1]
                        path.quadTo(a[0], a[1], (a[0] + b[0]) * 0.5, (a[1] + b[1]) * 0.5)
                    a = offs[-1]
                    path.quadTo(a[0], a[1], end[0], end[1])
                cur = tuple(end)
            elif op in ("closePath", "endPath"):
                # Filling closes every subpath anyway; endPath (open) is filled as if closed.
                if cur is not None:
                    path.close()
                cur = start = None
    return path


class _Canvas:
    """One reusable A8 surface per (thread, size): allocating a surface per glyph costs more than the fill."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.array = np.zeros((size, size), dtype=np.uint8)
        info = skia.ImageInfo.MakeA8(size, size)
        # The surface draws straight into our numpy buffer: no readback copy.
        self.surface = skia.Surface.MakeRasterDirect(info, self.array, size)
        self.canvas = self.surface.getCanvas()
        self.paint = skia.Paint(AntiAlias=True, Color=skia.ColorBLACK)


_local = threading.local()


def _canvas(size: int) -> _Canvas:
    cache = getattr(_local, "canvases", None)
    if cache is None:
        cache = _local.canvases = {}
    c = cache.get(size)
    if c is None:
        c = cache[size] = _Canvas(size)
    return c


def _matrix(bounds: skia.Rect, params: RenderParams, em: EmBox | None) -> skia.Matrix:
    """Font units (y up) -> pixels (y down) for the requested fit."""
    s = params.img_size
    inner = s * (1.0 - 2.0 * params.margin)
    cx = (bounds.left() + bounds.right()) * 0.5
    if params.fit == "tight":
        w, h = bounds.width(), bounds.height()
        scale = inner / max(w, h, 1e-6)
        cy = (bounds.top() + bounds.bottom()) * 0.5
        ty = s * 0.5 + cy * scale  # pixel row of font y=0
    else:
        if em is None:
            raise ValueError("fit='em' needs the font's EmBox")
        height = em.ascent - em.descent
        if height <= 0:
            raise ValueError(f"EmBox has ascent {em.ascent} <= descent {em.descent}")
        scale = inner / height
        ty = s * params.margin + em.ascent * scale  # baseline row
    tx = s * 0.5 - cx * scale
    return skia.Matrix.MakeAll(scale, 0, tx, 0, -scale, ty, 0, 0, 1)


def render(contours: str | bytes | Sequence, params: RenderParams, em: EmBox | None = None) -> np.ndarray:
    """Render one glyph to a (S, S) uint8 array, ink 255 on 0. contours: JSON text or parse_contours output."""
    if isinstance(contours, (str, bytes, bytearray)):
        contours = parse_contours(contours)
    path = _build_path(contours)
    bounds = path.computeTightBounds()
    c = _canvas(params.img_size)
    c.canvas.clear(skia.ColorTRANSPARENT)
    if bounds.width() > 0 or bounds.height() > 0:  # a lone point has nothing to fill
        path.transform(_matrix(bounds, params, em))
        c.canvas.drawPath(path, c.paint)
    return c.array.copy()
