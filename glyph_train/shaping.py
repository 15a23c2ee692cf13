"""Glyph outlines as contours JSON: a character's nominal glyph, or an Arabic letter's positional form
shaped by HarfBuzz in a ZWJ context, with every glyph the letter became placed where HarfBuzz put it.

HarfBuzz draws the outlines too: it decomposes components and applies a variable font's location in C,
an order of magnitude faster than fontTools' interpolating glyph set, and it is the same engine that
positions the glyphs. Its quadratic segments are merged back into TrueType qCurveTo chains, so static
TrueType outlines come out as fontTools' DecomposingRecordingPen records them.
"""

from __future__ import annotations

import json

import uharfbuzz as hb

ZWJ = 0x200D
Subpath = list[list]  # [[op, [[x, y], ...]], ...]

# Where the letter sits in its ZWJ context: (code points around it, its index).
_CONTEXTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "isol": ((), ()), "init": ((), (ZWJ,)), "medi": ((ZWJ,), (ZWJ,)), "fina": ((ZWJ,), ()),
}


def _coord(value: float) -> float | int:
    # 0.1 font unit is far below any raster's resolution and keeps the JSON short.
    value = round(value, 1)
    return int(value) if value.is_integer() else value


class ContourPen:
    """fontTools pen protocol receiver that records subpaths as contours JSON lists, offset by (dx, dy).

    HarfBuzz reports a TrueType chain of off-curve points as single quadratic segments joined at implied
    on-curve midpoints; those midpoints are dropped again so a qCurveTo carries the whole chain.
    """

    def __init__(self) -> None:
        self.subpaths: list[Subpath] = []
        self.dx = 0.0
        self.dy = 0.0
        self._start: list = []
        self._last_control: tuple[float, float] | None = None  # of the previous segment if quadratic

    def _pt(self, pt: tuple[float, float]) -> list:
        return [_coord(pt[0] + self.dx), _coord(pt[1] + self.dy)]

    def moveTo(self, pt: tuple[float, float]) -> None:
        self._start = self._pt(pt)
        self.subpaths.append([["moveTo", [self._start]]])
        self._last_control = None

    def lineTo(self, pt: tuple[float, float]) -> None:
        self.subpaths[-1].append(["lineTo", [self._pt(pt)]])
        self._last_control = None

    def curveTo(self, *pts: tuple[float, float]) -> None:
        self.subpaths[-1].append(["curveTo", [self._pt(p) for p in pts]])
        self._last_control = None

    def qCurveTo(self, *pts: tuple[float, float]) -> None:
        segment = self.subpaths[-1][-1]
        prev = self._last_control
        if len(pts) == 2 and prev is not None and segment[0] == "qCurveTo":
            control = pts[0]
            mid = ((prev[0] + control[0]) / 2 + self.dx, (prev[1] + control[1]) / 2 + self.dy)
            end = segment[1][-1]
            if abs(mid[0] - end[0]) <= 0.06 and abs(mid[1] - end[1]) <= 0.06:  # implied on-curve point
                segment[1][-1:] = [self._pt(control), self._pt(pts[1])]
                self._last_control = control
                return
        self.subpaths[-1].append(["qCurveTo", [self._pt(p) for p in pts]])
        self._last_control = pts[-2] if len(pts) >= 2 else None

    def closePath(self) -> None:
        subpath = self.subpaths[-1]
        # HarfBuzz draws the closing line explicitly; closePath already implies it.
        if len(subpath) > 1 and subpath[-1][0] == "lineTo" and subpath[-1][1][0] == self._start:
            subpath.pop()
        subpath.append(["closePath", []])
        self._last_control = None

    def endPath(self) -> None:
        self._last_control = None


def contours_json(subpaths: list[Subpath]) -> str:
    return json.dumps(subpaths, separators=(",", ":"))


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

    def glyph_outline(self, gid: int) -> list[Subpath]:
        """A glyph's outline at the origin, components decomposed; [] when it draws nothing."""
        pen = ContourPen()
        self.font.draw_glyph_with_pen(gid, pen)
        return pen.subpaths

    def form_outline(self, cp: int, form: str) -> list[Subpath]:
        """The letter's glyphs when shaped in the form's ZWJ context, placed at HarfBuzz's offsets and
        advances relative to the leftmost of them; ZWJ's glyph is not part of it."""
        before, after = _CONTEXTS[form]
        buf = hb.Buffer()
        buf.add_codepoints([*before, cp, *after])
        # At the default cluster level ZWJ merges into the letter's cluster and init/medi never apply.
        buf.cluster_level = hb.BufferClusterLevel.CHARACTERS
        buf.guess_segment_properties()  # direction and script from the letter (Arabic, Syriac, N'Ko ...)
        if buf.script == "Arab":
            buf.language = "ar"  # fixed so results do not depend on the process locale
        hb.shape(self.font, buf, {})
        index = len(before)
        placed: list[tuple[int, float, float, float]] = []  # glyph, pen x, x offset, y
        x = y = 0.0
        for info, pos in zip(buf.glyph_infos, buf.glyph_positions):
            if info.cluster == index:
                if info.codepoint == 0:
                    return []  # .notdef: the font cannot show this form
                placed.append((info.codepoint, x, pos.x_offset, y + pos.y_offset))
            x += pos.x_advance
            y += pos.y_advance
        if not placed:
            return []
        origin = min(pen_x for _, pen_x, _, _ in placed)
        pen = ContourPen()
        for gid, pen_x, x_offset, gy in placed:
            pen.dx, pen.dy = pen_x - origin + x_offset, gy
            self.font.draw_glyph_with_pen(gid, pen)
        return pen.subpaths
