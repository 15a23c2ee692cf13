"""Contours JSON (fontTools pen protocol, font units, y up) -> anti-aliased uint8 image, ink 255 on 0.

The contours format is the users' glyphs.db format, as the old system wrote it (and as build-db writes it):
a list of subpaths, each a list of `[op, payload]`:

    ["moveTo", [x, y]]   ["lineTo", [x, y]]                 one point
    ["curveTo", [[x1, y1], [x2, y2], [x3, y3]]]             a cubic
    ["qCurveTo", [[x, y], ..., end]]                        a TrueType chain: off-curve points, then the
                                                            on-curve end (null: an all-off-curve contour)
    ["closePath", null]

The nested `["moveTo", [[x, y]]]` / `["closePath", []]` form that glyph-train 0.x wrote is read too.

Skia does the scan conversion: nonzero winding, exact quadratic/cubic curves, anti-aliasing. A render is
one path build plus one draw into a per-thread reused surface, so the cost per glyph is the JSON parse, the
path build and skia's fill, with no allocation besides the returned array.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import skia

from glyph_train.corpus.font_rows import EmBox
from glyph_train.errors import GlyphTrainError
from glyph_train.flags import flag_field, flags_of

try:  # ~2x faster than json on coordinate-heavy text; the parse is a fifth of a render
    from orjson import loads as _loads
except ImportError:  # pragma: no cover
    from json import loads as _loads

# Bump whenever output pixels can change (fits, anti-aliasing, curve handling): caches key on it.
RENDERER_VERSION = "skia-3"  # skia-3: reads the users' one-point moveTo/lineTo

# Single fits, and the multi-channel ones: one channel per fit, in order.
FITS = ("tight", "em", "origin", "tight+em", "tight+origin")
_OPS = {"moveTo", "lineTo", "curveTo", "qCurveTo", "closePath", "endPath"}
_ONE_POINT = ("moveTo", "lineTo")

Contours = list[list[tuple[str, list]]]


@dataclass(frozen=True)
class RenderParams:
    """How an outline becomes an image; --img-size and --fit are declared here, for every command."""

    img_size: int = flag_field(128, "image size in pixels")
    fit: str = flag_field("tight", "tight: the glyph's bbox fills the frame; em: the font's ascent-descent "
                                   "does, glyph centred; origin: as em, with the glyph's origin (x = 0, where an "
                                   "Arabic letter joins the next) at the left margin; tight+em, tight+origin: "
                                   "two channels", choices=FITS)
    margin: float = 0.08  # fraction of the frame left empty on each side

    def __post_init__(self) -> None:
        if self.img_size < 1:
            raise ValueError(f"img_size must be positive, got {self.img_size}")
        if self.fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}, got {self.fit!r}")
        if not 0.0 <= self.margin < 0.5:
            raise ValueError(f"margin must be in [0, 0.5), got {self.margin}")

    @property
    def fits(self) -> tuple[str, ...]:
        """The single fits, one per channel."""
        return tuple(self.fit.split("+"))

    @property
    def channels(self) -> int:
        return len(self.fits)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """One image's uint8 shape: (S, S) for one fit, (C, S, S) for several."""
        s = self.img_size
        return (s, s) if self.channels == 1 else (self.channels, s, s)

    def picture(self) -> "RenderParams":
        """The first fit alone: what pages show a person of a multi-channel input."""
        return RenderParams(self.img_size, self.fits[0], self.margin)

    @classmethod
    def from_args(cls, args: Any) -> "RenderParams":
        """The --img-size/--fit a command was given (RENDER_FLAGS); a bad value is the user's one-line error."""
        try:
            return cls(img_size=args.img_size, fit=args.fit)
        except ValueError as e:
            raise GlyphTrainError(str(e)) from None


RENDER_FLAGS = flags_of(RenderParams)


def _point(p: Any, where: str) -> tuple[float, float]:
    if not isinstance(p, (list, tuple)) or len(p) != 2:
        raise ValueError(f"{where}: point must be [x, y], got {p!r:.40}")
    x, y = p
    if isinstance(x, bool) or isinstance(y, bool) or not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
        raise ValueError(f"{where}: point coordinates must be numbers, got {p!r:.40}")
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"{where}: point coordinates must be finite, got {p!r:.40}")
    return float(x), float(y)


def _is_flat_point(payload: Sequence) -> bool:
    return len(payload) == 2 and not isinstance(payload[0], (list, tuple))


def _validate(data: Any) -> Contours:
    """The strict reader: every subpath and segment checked, one-point ops normalised to a point list."""
    if not isinstance(data, (list, tuple)):
        raise ValueError(f"contours must be a list of subpaths, got {type(data).__name__}")
    out: Contours = []
    points = 0
    for i, sub in enumerate(data):
        if not isinstance(sub, (list, tuple)):
            raise ValueError(f"subpath {i} must be a list of [op, points], got {type(sub).__name__}")
        segs: list[tuple[str, list]] = []
        for j, seg in enumerate(sub):
            where = f"subpath {i} segment {j}"
            if not isinstance(seg, (list, tuple)) or len(seg) != 2:
                raise ValueError(f"{where}: must be [op, points]")
            op, payload = seg
            if not isinstance(op, str) or op not in _OPS:
                raise ValueError(f"{where}: unknown op {op!r:.30}")
            if payload is None:
                payload = []
            if not isinstance(payload, (list, tuple)):
                raise ValueError(f"{where}: points must be a list")
            if op in _ONE_POINT and _is_flat_point(payload):
                payload = [payload]  # the users' ["moveTo", [x, y]]
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
            if op == "qCurveTo" and (not pts or (pts[-1] is None and len(pts) < 2)):
                raise ValueError(f"{where}: qCurveTo needs at least one point besides a null end")
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
        data = _loads(text)
    except (ValueError, TypeError) as e:
        raise ValueError(f"contours are not valid JSON ({e})") from None
    return _validate(data)


def _build_path(contours: Sequence[Sequence[Sequence]]) -> skia.Path:
    """Font-unit skia.Path (nonzero fill). TrueType qCurveTo chains become quads joined at implied midpoints.

    This is the hot loop for 500k glyphs: one pass, bound methods, no per-point validation (pybind rejects
    non-numbers with TypeError, which render() turns into a ValueError).
    """
    path = skia.Path()
    path.setFillType(skia.PathFillType.kWinding)  # nonzero: holes wound against the outline, islands with it
    move_to, line_to, quad_to, cubic_to, close = path.moveTo, path.lineTo, path.quadTo, path.cubicTo, path.close
    for sub in contours:
        if not sub:
            continue
        op, pts = sub[0]
        if op != "moveTo" and pts and pts[-1] is not None:
            # Only an all-off-curve chain may open a subpath without moveTo; anything else would make
            # skia start the subpath at (0, 0), so start it at its own first point instead.
            move_to(*(pts if op == "lineTo" and len(pts) == 2 else pts[0]))
        for op, pts in sub:
            if op == "qCurveTo":
                end = pts[-1]
                if end is None:
                    # All off-curve (TrueType): start and end at the midpoint of the last and first points.
                    (fx, fy), (lx, ly) = pts[0], pts[-2]
                    end = ((fx + lx) * 0.5, (fy + ly) * 0.5)
                    move_to(*end)
                elif len(pts) == 1:
                    line_to(*end)  # a chain with no off-curve point is a straight segment
                    continue
                x0, y0 = pts[0]
                for k in range(1, len(pts) - 1):
                    x1, y1 = pts[k]
                    quad_to(x0, y0, (x0 + x1) * 0.5, (y0 + y1) * 0.5)
                    x0, y0 = x1, y1
                quad_to(x0, y0, end[0], end[1])
            elif op == "lineTo":
                line_to(*(pts if len(pts) == 2 else pts[0]))  # [x, y] (users' format) or [[x, y]]
            elif op == "moveTo":
                move_to(*(pts if len(pts) == 2 else pts[0]))
            elif op == "curveTo":
                (x1, y1), (x2, y2), (x3, y3) = pts
                cubic_to(x1, y1, x2, y2, x3, y3)
            elif op == "closePath" or op == "endPath":
                close()  # filling treats open subpaths as closed anyway
            else:
                raise ValueError(f"unknown op {op!r:.30}")
    return path


class _Canvas:
    """A reusable A8 surface per (thread, size) drawing straight into a numpy buffer: no per-glyph
    allocation or readback call. (N32 fills ~20% faster but clearing it and pulling out the alpha channel
    cost the same again.)"""

    def __init__(self, size: int) -> None:
        self.pixels = np.zeros((size, size), dtype=np.uint8)
        self.surface = skia.Surface.MakeRasterDirect(skia.ImageInfo.MakeA8(size, size), self.pixels, size)
        self.canvas = self.surface.getCanvas()
        self.paint = skia.Paint(AntiAlias=True)


_local = threading.local()


def _canvas(size: int) -> _Canvas:
    cache = getattr(_local, "canvases", None)
    if cache is None:
        cache = _local.canvases = {}
    c = cache.get(size)
    if c is None:
        c = cache[size] = _Canvas(size)
    return c


def _matrix(bounds: skia.Rect, params: RenderParams, fit: str, em: EmBox | None) -> skia.Matrix:
    """Font units (y up) -> pixels (y down) for one fit."""
    s = params.img_size
    inner = s * (1.0 - 2.0 * params.margin)
    cx = (bounds.left() + bounds.right()) * 0.5
    if fit == "tight":
        w, h = bounds.width(), bounds.height()
        scale = inner / max(w, h, 1e-6)
        cy = (bounds.top() + bounds.bottom()) * 0.5
        ty = s * 0.5 + cy * scale  # pixel row of font y=0
    else:
        if em is None:
            raise ValueError(f"fit={fit!r} needs the font's EmBox")
        height = em.ascent - em.descent
        if height <= 0:
            raise ValueError(f"EmBox has ascent {em.ascent} <= descent {em.descent}")
        scale = inner / height
        ty = s * params.margin + em.ascent * scale  # baseline row
    # origin: font x = 0 on the left margin, so ink that reaches the origin (a joining stroke) is seen as such
    tx = s * params.margin if fit == "origin" else s * 0.5 - cx * scale
    return skia.Matrix.MakeAll(scale, 0, tx, 0, -scale, ty, 0, 0, 1)


def render(contours: str | bytes | Sequence, params: RenderParams, em: EmBox | None = None) -> np.ndarray:
    """Render one glyph to a uint8 array of `params.image_shape`, ink 255 on 0: (S, S), or (C, S, S) with
    one channel per fit of a multi-fit `params`.

    contours: JSON text (as stored in glyphs.db) or a parsed list. ValueError with a short reason if the
    outline is unusable; an outline with no area renders blank.
    """
    if isinstance(contours, (str, bytes, bytearray)):
        try:
            contours = _loads(contours)
        except ValueError as e:  # json and orjson decode errors are ValueErrors
            raise ValueError(f"contours are not valid JSON ({e})") from None
    if not isinstance(contours, (list, tuple)):
        raise ValueError(f"contours must be a list of subpaths, got {type(contours).__name__}")
    try:
        path = _build_path(contours)
    except (TypeError, ValueError, LookupError, AttributeError) as e:  # KeyError: a dict where a list belongs
        # Cheap path failed: let the strict validator name the problem.
        _validate(contours)
        raise ValueError(f"unusable contours ({e})") from None
    if path.countPoints() == 0:
        raise ValueError("contours are empty (no points)")
    if not path.isFinite():
        raise ValueError("contours have non-finite coordinates")
    bounds = path.computeTightBounds()
    c = _canvas(params.img_size)
    channels = []
    last = len(params.fits) - 1
    for k, fit in enumerate(params.fits):
        c.canvas.clear(skia.ColorTRANSPARENT)
        if bounds.width() > 0 or bounds.height() > 0:  # a lone point has nothing to fill
            placed = path if k == last else skia.Path(path)  # the last fit may move the path itself
            placed.transform(_matrix(bounds, params, fit, em))
            c.canvas.drawPath(placed, c.paint)
        channels.append(c.pixels.copy())
    return channels[0] if len(channels) == 1 else np.stack(channels)


def ink_bounds(contours: str | bytes | Sequence) -> tuple[float, float, float, float]:
    """(x min, y min, x max, y max) of the outline's ink, font units, y up; ValueError if it is unusable."""
    parsed = parse_contours(contours) if isinstance(contours, (str, bytes, bytearray)) else _validate(contours)
    box = _build_path(parsed).computeTightBounds()  # the path keeps font units: skia's top is the lowest y
    return box.left(), box.top(), box.right(), box.bottom()
