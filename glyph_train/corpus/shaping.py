"""Glyph outlines as contours JSON: a character's nominal glyph, an Arabic letter's positional form
shaped by HarfBuzz in a ZWJ context, with every glyph the letter became placed where HarfBuzz put it, or a
digit's figure variant (numerator, superior ...) reached through its GSUB feature.

HarfBuzz draws the outlines too: it decomposes components and applies a variable font's location in C,
an order of magnitude faster than fontTools' interpolating glyph set, and it is the same engine that
positions the glyphs. Its quadratic segments are merged back into TrueType qCurveTo chains, so static
TrueType outlines come out as fontTools' DecomposingRecordingPen records them.
"""

from __future__ import annotations

from functools import cached_property, lru_cache
from itertools import chain

import uharfbuzz as hb

from glyph_train.corpus.unicode_data import FIGURE_FEATURES, FIGURES

ZWJ = 0x200D

# Code points before and after the letter for each positional form.
_CONTEXTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "isol": ((), ()), "init": ((), (ZWJ,)), "medi": ((ZWJ,), (ZWJ,)), "fina": ((ZWJ,), ()),
}

# The pen writes contours JSON as a %-template plus a flat list of coordinates, formatted in one go at
# the end: building nested lists and json.dumps-ing them cost several times HarfBuzz's drawing itself.
# %g (six significant digits) writes the integer and half-unit coordinates of static fonts exactly, as
# ints where integral, and an instance's interpolated ones to a hundredth of a unit below 10000.
_MOVE = ',[["moveTo",[%g,%g]]'  # the users' format: one point for moveTo/lineTo, null for closePath
_LINE = ',["lineTo",[%g,%g]]'
_CLOSE = ',["closePath",null]]'
_END = "]"


@lru_cache(maxsize=None)
def _segment(op: str, points: int, null_end: bool = False) -> str:
    return f',["{op}",[' + ",".join(["[%g,%g]"] * points + ["null"] * null_end) + "]]"


def _buffer(codepoints: list[int]) -> hb.Buffer:
    buf = hb.Buffer()
    buf.add_codepoints(codepoints)
    # At the default cluster level ZWJ merges into the letter's cluster and init/medi never apply.
    buf.cluster_level = hb.BufferClusterLevel.CHARACTERS
    buf.guess_segment_properties()  # direction and script from the letter (Arabic, Syriac, N'Ko ...)
    buf.language = "ar" if buf.script == "Arab" else "und"  # not the process locale's
    return buf


class ContourPen:
    """fontTools pen protocol receiver that writes contours JSON (font units, y up) in the users' format
    (cache/raster.py's docstring): the old system's tools and glyph-train read each other's DBs.

    HarfBuzz reports a TrueType chain of off-curve points as single quadratic segments joined at implied
    on-curve midpoints; those midpoints are dropped again so a qCurveTo carries the whole chain.
    """

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._coords: list[float] = []  # x0, y0, x1, y1, ... in drawing order
        self._offsets: list[tuple[int, float, float]] = []  # (first coordinate index, dx, dy)
        self._chain = 0  # points in the last segment if it is a qCurveTo, else 0
        self._start: tuple[float, float] = (0.0, 0.0)

    def offset(self, dx: float, dy: float) -> None:
        """Place what is drawn from now on at (dx, dy)."""
        self._offsets.append((len(self._coords), dx, dy))
        self._chain = 0

    def moveTo(self, pt: tuple[float, float]) -> None:
        self._parts.append(_MOVE)
        self._coords += pt
        self._start = pt
        self._chain = 0

    def lineTo(self, pt: tuple[float, float]) -> None:
        self._parts.append(_LINE)
        self._coords += pt
        self._chain = 0

    def curveTo(self, *pts: tuple[float, float]) -> None:
        self._parts.append(_segment("curveTo", len(pts)))
        self._coords += chain.from_iterable(pts)
        self._chain = 0

    def qCurveTo(self, *pts: tuple[float, float]) -> None:
        coords = self._coords
        if self._chain >= 2 and len(pts) == 2:
            (cx, cy), end = pts
            # The previous end point halfway between the previous and this off-curve point is an implied
            # on-curve point (HarfBuzz computes it in float32, hence the tolerance): extend the chain.
            if -2e-3 < coords[-4] + cx - 2 * coords[-2] < 2e-3 and -2e-3 < coords[-3] + cy - 2 * coords[-1] < 2e-3:
                coords[-2:] = (cx, cy, *end)
                self._chain += 1
                self._parts[-1] = _segment("qCurveTo", self._chain)
                return
        if pts[-1] is None:  # fontTools' all-off-curve contour, a subpath of its own without moveTo
            self._parts.append(",[" + _segment("qCurveTo", len(pts) - 1, null_end=True)[1:])
            coords += chain.from_iterable(pts[:-1])
            self._chain = 0
            return
        self._parts.append(_segment("qCurveTo", len(pts)))
        coords += chain.from_iterable(pts)
        self._chain = len(pts)

    def closePath(self) -> None:
        # HarfBuzz draws the closing line explicitly; closePath implies it.
        parts = self._parts
        if parts[-1] is _LINE and parts[-2] is not _MOVE and tuple(self._coords[-2:]) == tuple(self._start):
            parts.pop()
            del self._coords[-2:]
        parts.append(_CLOSE)
        self._chain = 0

    def endPath(self) -> None:
        self._parts.append(_END)
        self._chain = 0

    def json(self) -> str:
        """The recorded subpaths as contours JSON; '' when nothing was drawn."""
        if not self._parts:
            return ""
        coords = self._coords
        bounds = [*self._offsets, (len(coords), 0.0, 0.0)]
        if self._offsets:
            coords = coords[: bounds[0][0]]
            for (first, dx, dy), (stop, _, _) in zip(bounds, bounds[1:]):
                part = self._coords[first:stop]
                part[0::2] = [x + dx for x in part[0::2]]
                part[1::2] = [y + dy for y in part[1::2]]
                coords += part
        return "[" + ("".join(self._parts) % tuple(coords))[1:] + "]"


class Shaper:
    """One face at one variation location, ready to draw and shape."""

    def __init__(self, data: bytes, face_index: int = 0, coords: dict[str, float] | None = None) -> None:
        self.face = hb.Face(data, face_index)
        self.font = hb.Font(self.face)
        if coords:
            self.font.set_variations(coords)  # shaping (HVAR, GPOS) and drawing (gvar/CFF2) at the instance

    def cmap(self) -> dict[int, int]:
        """Unicode code point -> nominal glyph id."""
        nominal = self.font.get_nominal_glyph
        return {cp: nominal(cp) for cp in self.face.unicodes}

    @cached_property
    def mapped_glyphs(self) -> frozenset[int]:
        return frozenset(self.cmap().values())

    def glyph_outline(self, gid: int) -> str:
        """A glyph's outline at the origin as contours JSON, components decomposed; '' if it draws nothing."""
        pen = ContourPen()
        self.font.draw_glyph_with_pen(gid, pen)
        return pen.json()

    def figure_variants(self, cp: int) -> list[tuple[str, int]]:
        """(feature, glyph id) of each FIGURE_FEATURES glyph of a digit that no cmap entry maps, each glyph once:
        a font whose superiors are its numerators gives them under 'numr' only, and a superior three that is
        U+00B3's glyph is that character's, not a variant. The one reading of figure variants: build-db draws
        these, and inference reads a font's own labels from them."""
        if cp not in FIGURES or not self.font.get_nominal_glyph(cp):
            return []
        seen, out = set(self.mapped_glyphs), []
        for feature in FIGURE_FEATURES:
            buf = _buffer([cp])
            hb.shape(self.font, buf, {feature: True})
            infos = buf.glyph_infos
            if len(infos) == 1 and infos[0].codepoint and infos[0].codepoint not in seen:
                seen.add(infos[0].codepoint)
                out.append((feature, infos[0].codepoint))
        return out

    def form_glyphs(self, cp: int, form: str) -> list[tuple[int, float, float]]:
        """The glyphs the letter becomes when shaped in the form's ZWJ context, each (glyph id, x, y) placed
        at HarfBuzz's advances and offsets relative to the leftmost of them; ZWJ's own glyph is left out.
        [] when the font shows .notdef for it. The one shaping of positional forms: build-db draws these, and
        inference reads a font's own labels from them."""
        before, after = _CONTEXTS[form]
        buf = _buffer([*before, cp, *after])
        hb.shape(self.font, buf, {})
        infos, positions = buf.glyph_infos, buf.glyph_positions
        ours = [info.cluster == len(before) for info in infos]
        if not any(ours) and len(infos) == 1:  # no space glyph to hide ZWJ with: HarfBuzz deleted it, merging clusters
            ours = [True]
        placed: list[tuple[int, float, float, float]] = []  # glyph, pen x, x offset, y
        x = y = 0.0
        for info, pos, mine in zip(infos, positions, ours):
            if mine:
                if info.codepoint == 0:
                    return []  # .notdef: the font cannot show this form
                placed.append((info.codepoint, x, pos.x_offset, y + pos.y_offset))
            x += pos.x_advance
            y += pos.y_advance
        origin = min((pen_x for _, pen_x, _, _ in placed), default=0.0)
        return [(gid, pen_x - origin + x_offset, glyph_y) for gid, pen_x, x_offset, glyph_y in placed]

    def form_outline(self, cp: int, form: str) -> str:
        """The letter's glyphs in the form's ZWJ context (`form_glyphs`), drawn where HarfBuzz put them, as
        contours JSON; '' when there are none."""
        pen = ContourPen()
        for gid, dx, dy in self.form_glyphs(cp, form):
            pen.offset(dx, dy)
            self.font.draw_glyph_with_pen(gid, pen)
        return pen.json()
