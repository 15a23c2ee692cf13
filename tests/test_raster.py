"""Rasteriser: checked against FreeType rendering the same glyphs straight from the font files.

FreeType reads the font itself (its own TrueType/CFF loaders and scan converter), so agreement tests our
whole chain: outline -> contours JSON -> skia path -> fit -> anti-aliased fill.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import entry_points
from pathlib import Path

import freetype
import numpy as np
import pytest
from fontTools.fontBuilder import FontBuilder
from fontTools.pens.boundsPen import BoundsPen
from fontTools.pens.recordingPen import DecomposingRecordingPen
from fontTools.pens.t2CharStringPen import T2CharStringPen
from fontTools.ttLib import TTFont
from scipy import ndimage

from glyph_train.cache.raster import RENDERER_VERSION, RenderParams, ink_bounds, parse_contours, render
from glyph_train.corpus.font_rows import EmBox, em_box_from_metrics
from tests.dbfactory import pen_to_contours

# ---- helpers -------------------------------------------------------------------------------------


def font_file(family: str, name: str) -> Path:
    (ep,) = [e for e in entry_points(group="fontpkg.family") if e.name == family]
    return Path(ep.load().__file__).parent / "files" / name


ROBOTO = font_file("roboto", "Roboto[wdth,wght].ttf")
LORA = font_file("lora", "Lora[wght].ttf")
AMIRI = font_file("amiri", "Amiri-Regular.ttf")
NOTO_ARABIC = font_file("noto_sans_arabic", "NotoSansArabic[wdth,wght].ttf")
PLAYFAIR = font_file("playfair_display", "PlayfairDisplay[wght].ttf")


class Font:
    """One font file seen by fontTools (for contours, bounds, metrics) and FreeType (for the reference)."""

    def __init__(self, path: Path) -> None:
        self.tt = TTFont(path)
        self.glyphs = self.tt.getGlyphSet()
        self.cmap = self.tt.getBestCmap()
        self.face = freetype.Face(str(path))
        self.upem = self.tt["head"].unitsPerEm
        os2, hhea = self.tt["OS/2"], self.tt["hhea"]
        self.em = em_box_from_metrics(self.upem, hhea.ascent, hhea.descent, os2.sTypoAscender, os2.sTypoDescender)

    def name(self, char: str) -> str:
        return self.cmap[ord(char)]

    def contours(self, name: str) -> list:
        pen = DecomposingRecordingPen(self.glyphs)
        self.glyphs[name].draw(pen)
        return pen_to_contours(pen.value)

    def bounds(self, name: str) -> tuple[float, float, float, float]:
        pen = BoundsPen(self.glyphs)
        self.glyphs[name].draw(pen)
        return pen.bounds

    def reference(self, name: str, params: RenderParams) -> np.ndarray:
        """FreeType's unhinted anti-aliased rendering placed with the fit the spec describes."""
        s, m = params.img_size, params.margin
        x0, y0, x1, y1 = self.bounds(name)
        inner = s * (1 - 2 * m)
        if params.fit == "tight":
            scale = inner / max(x1 - x0, y1 - y0)
            ty = s / 2 + (y0 + y1) / 2 * scale
        else:
            scale = inner / (self.em.ascent - self.em.descent)
            ty = s * m + self.em.ascent * scale
        tx = s / 2 - (x0 + x1) / 2 * scale
        # Pixel = (x * scale + tx, ty - y * scale). FreeType at ppem == upem works in font units (26.6),
        # its transform adds the scale and the sub-pixel part of the offset; whole pixels go to placement.
        ix, iy = math.floor(tx), math.floor(ty)
        self.face.set_char_size(self.upem * 64)
        k = round(scale * 0x10000)
        delta = freetype.Vector(round((tx - ix) * 64), round(-(ty - iy) * 64))
        self.face.set_transform(freetype.Matrix(k, 0, 0, k), delta)
        flags = freetype.FT_LOAD_NO_HINTING | freetype.FT_LOAD_NO_BITMAP | freetype.FT_LOAD_RENDER
        self.face.load_glyph(self.tt.getGlyphID(name), flags)
        g = self.face.glyph
        bm = g.bitmap
        src = np.zeros((0, 0), np.uint8)
        if bm.rows:
            src = np.array(bm.buffer, dtype=np.uint8).reshape(bm.rows, bm.pitch)[:, : bm.width]
        out = np.zeros((s, s), np.uint8)
        r0, c0 = iy - g.bitmap_top, ix + g.bitmap_left
        rs, cs = slice(max(r0, 0), min(r0 + src.shape[0], s)), slice(max(c0, 0), min(c0 + src.shape[1], s))
        if rs.start < rs.stop and cs.start < cs.stop:  # clipped like ours when it leaves the frame
            out[rs, cs] = src[rs.start - r0 : rs.stop - r0, cs.start - c0 : cs.stop - c0]
        return out


_fonts: dict[Path, Font] = {}


def font(path: Path) -> Font:
    if path not in _fonts:
        _fonts[path] = Font(path)
    return _fonts[path]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a >= 128, b >= 128
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, each as a boolean mask."""
    labels, n = ndimage.label(mask)
    return [labels == k for k in range(1, n + 1)]


def topology(img: np.ndarray) -> tuple[int, int]:
    """(ink islands, holes): holes are background regions not touching the border."""
    ink = img >= 128
    islands = [c for c in components(ink) if c.sum() >= 4]
    holes = [
        c for c in components(~ink)
        if c.sum() >= 4 and not (c[0].any() or c[-1].any() or c[:, 0].any() or c[:, -1].any())
    ]
    return len(islands), len(holes)


def ink_bbox(img: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(img >= 128)
    return rows.min(), rows.max(), cols.min(), cols.max()


def square(x0: float, y0: float, x1: float, y1: float, ccw: bool = True, close: bool = True) -> list:
    pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if not ccw:
        pts = [pts[0]] + pts[:0:-1]
    sub = [["moveTo", [list(pts[0])]]] + [["lineTo", [list(p)]] for p in pts[1:]]
    return sub + [["closePath", []]] if close else sub


P128 = RenderParams(img_size=128)
P224 = RenderParams(img_size=224)

# ---- agreement with FreeType ---------------------------------------------------------------------

LATIN = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789&@%$?!"
# Arabic letters plus a few presentation forms (medial heh, initial/medial beh, peh, keheh).
ARABIC = [chr(c) for c in range(0x0621, 0x064B)] + [chr(c) for c in (0xFEEC, 0xFE91, 0xFE92, 0xFB58, 0x06A9)]
FONT_SETS = {
    "roboto": (ROBOTO, LATIN),
    "lora": (LORA, LATIN),
    "playfair": (PLAYFAIR, LATIN),
    "amiri": (AMIRI, ARABIC),
    "noto_arabic": (NOTO_ARABIC, ARABIC),
}


def sample(path: Path, chars) -> list[str]:
    f = font(path)
    return [f.name(c) for c in chars if ord(c) in f.cmap and f.contours(f.name(c))]


def box_blur(img: np.ndarray) -> np.ndarray:
    x = np.pad(img.astype(np.float32), 1)
    h, w = img.shape
    return sum(x[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9


def compare(ours: np.ndarray, ref: np.ndarray) -> tuple[int, int, float]:
    """(intersection, union) of ink at 128, and the largest difference after a 3x3 blur: anti-aliasing
    differences along edges average out, a missing or misplaced part (a dot, a counter) does not."""
    a, b = ours >= 128, ref >= 128
    return int((a & b).sum()), int((a | b).sum()), float(np.abs(box_blur(ours) - box_blur(ref)).max())


@pytest.mark.parametrize("font_set", FONT_SETS)
@pytest.mark.parametrize(
    "params", [P128, P224, RenderParams(img_size=128, fit="em")], ids=["tight128", "tight224", "em128"]
)
def test_matches_freetype(font_set: str, params: RenderParams) -> None:
    path, chars = FONT_SETS[font_set]
    f = font(path)
    names = sample(path, chars)
    assert len(names) >= 40
    inter = union = 0
    for n in names:
        ours, ref = render(json.dumps(f.contours(n)), params, f.em), f.reference(n, params)
        i, u, blur_diff = compare(ours, ref)
        inter, union = inter + i, union + u
        assert blur_diff < 80, f"{n}: differs from FreeType by {blur_diff:.0f} grey levels after a 3x3 blur"
        if params.fit == "tight":  # large enough for per-glyph thresholds; em-fit hairlines are ~1 px
            assert i / u >= 0.95, f"{n}: IoU {i / u:.3f}"
            assert topology(ours) == topology(ref), n
    assert inter / union >= 0.97


@pytest.fixture(scope="module")
def cff_font(tmp_path_factory) -> Path:
    """A CFF (cubic) OpenType font built from Lora's outlines: no fontpkg family ships .otf."""
    src = font(LORA)
    chars = "ABCDEGOQRSabcdegos08&@"
    names = [".notdef"] + [src.name(c) for c in chars]
    charstrings = {}
    for n in names:
        pen = T2CharStringPen(src.tt["hmtx"][n][0], src.glyphs)
        src.glyphs[n].draw(pen)  # quadratic segments are elevated to exact cubics
        charstrings[n] = pen.getCharString()
    fb = FontBuilder(src.upem, isTTF=False)
    fb.setupGlyphOrder(names)
    fb.setupCharacterMap({ord(c): src.name(c) for c in chars})
    fb.setupCFF("LoraCFF", {"FullName": "Lora CFF"}, charstrings, {})
    fb.setupHorizontalMetrics({n: src.tt["hmtx"][n] for n in names})
    ascent, descent = round(src.em.ascent), round(src.em.descent)
    fb.setupHorizontalHeader(ascent=ascent, descent=descent)
    fb.setupNameTable({"familyName": "Lora CFF", "styleName": "Regular"})
    fb.setupOS2(sTypoAscender=ascent, sTypoDescender=descent)
    fb.setupPost()
    out = tmp_path_factory.mktemp("cff") / "LoraCFF.otf"
    fb.save(out)
    return out


@pytest.mark.parametrize("params", [P128, P224], ids=["128", "224"])
def test_cff_cubic_outlines_match_freetype(cff_font: Path, params: RenderParams) -> None:
    f = Font(cff_font)
    names = sorted(set(f.cmap.values()))
    assert any(op == "curveTo" for sub in f.contours(names[0]) for op, _ in sub)
    for n in names:
        score = iou(render(f.contours(n), params), f.reference(n, params))
        assert score >= 0.97, f"{n}: IoU {score:.3f}"


# ---- golden glyphs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("params", [P128, P224], ids=["128", "224"])
@pytest.mark.parametrize(
    "font_set,char,islands,holes",
    [
        ("roboto", "O", 1, 1),
        ("roboto", "8", 1, 2),
        ("lora", "B", 1, 2),
        ("roboto", "i", 2, 0),  # the dot is a separate island and filled
        ("lora", "j", 2, 0),
        ("amiri", "\ufeec", 1, 2),  # heh medial: two counters
        ("amiri", "\u0628", 2, 0),  # beh: body and dot below
    ],
    ids=["O", "8", "B", "i", "j", "heh_medi", "beh"],
)
def test_golden_topology(font_set: str, char: str, islands: int, holes: int, params: RenderParams) -> None:
    f = font(FONT_SETS[font_set][0])
    name = f.name(char)
    img = render(json.dumps(f.contours(name)), params)
    assert img.shape == (params.img_size, params.img_size) and img.dtype == np.uint8
    assert topology(img) == (islands, holes)
    assert topology(f.reference(name, params)) == (islands, holes)  # the expectation itself is right


def test_o_ring_filled_and_hole_open() -> None:
    f = font(ROBOTO)
    img = render(f.contours(f.name("O")), P128)
    s = P128.img_size
    assert img[s // 2, s // 2] == 0  # counter open
    row = img[s // 2]
    assert row[: s // 4].max() == 255 and row[-s // 4 :].max() == 255  # both sides of the ring are ink
    assert img.max() == 255 and len(np.unique(img)) > 10  # anti-aliased: intermediate levels at edges
    # Tight fit: the bbox touches the margin on the long side, centred on the short one.
    r0, r1, c0, c1 = ink_bbox(img)
    m = round(P128.margin * s)
    assert abs(r0 - m) <= 1 and abs((s - 1 - r1) - m) <= 1
    assert abs(c0 - (s - 1 - c1)) <= 1


# ---- synthetic outlines ----------------------------------------------------------------------------


def test_island_inside_hole_stays_filled() -> None:
    contours = [square(0, 0, 300, 300), square(50, 50, 250, 250, ccw=False), square(100, 100, 200, 200)]
    img = render(contours, RenderParams(img_size=128, margin=0.0))
    assert img[64, 64] == 255  # innermost square: same direction as outer -> filled
    assert img[64, 32] == 0  # ring between reversed square and island: hole
    assert img[64, 5] == 255  # outer ring
    assert topology(img) == (2, 1)


def test_same_direction_overlap_stays_filled() -> None:
    # Nonzero, not even-odd: two overlapping squares wound the same way leave no gap where they overlap.
    img = render([square(0, 0, 200, 200), square(100, 100, 300, 300)], RenderParams(img_size=128, margin=0.0))
    assert img[64, 64] == 255
    assert topology(img) == (1, 0)


def test_all_off_curve_quadratic_circle() -> None:
    # TrueType circle: four off-curve points at the square's corners, on-curve points implied at the
    # edge midpoints. Each quadrant is a triangle (r^2/2) plus a parabolic segment (2/3 of r^2/2).
    r = 500
    contours = [[["qCurveTo", [[r, r], [-r, r], [-r, -r], [r, -r], None]], ["closePath", []]]]
    s = 224
    img = render(json.dumps(contours), RenderParams(img_size=s, margin=0.0))
    px = s / (2 * r)  # tight fit: the bbox (-r..r) fills the frame
    expected = 4 * (r * r / 2 + r * r / 3) * px * px
    assert img.sum() / 255 == pytest.approx(expected, rel=0.005)
    assert img[s // 2, s // 2] == 255 and img[0, 0] == 0


def test_cubic_circle_area() -> None:
    r, k = 400.0, 0.5522847498 * 400.0
    contours = [[
        ["moveTo", [[r, 0]]],
        ["curveTo", [[r, k], [k, r], [0, r]]],
        ["curveTo", [[-k, r], [-r, k], [-r, 0]]],
        ["curveTo", [[-r, -k], [-k, -r], [0, -r]]],
        ["curveTo", [[k, -r], [r, -k], [r, 0]]],
        ["closePath", []],
    ]]
    s = 224
    img = render(contours, RenderParams(img_size=s, margin=0.1))
    radius_px = s * 0.8 / 2
    assert img.sum() / 255 == pytest.approx(math.pi * radius_px**2, rel=0.005)


def test_open_subpath_is_filled_as_closed() -> None:
    params = RenderParams(img_size=64, margin=0.1)
    closed = render([square(0, 0, 100, 100)], params)
    opened = render([square(0, 0, 100, 100, close=False)], params)
    np.testing.assert_array_equal(opened, closed)
    assert opened[32, 32] == 255


def test_text_and_parsed_input_agree_and_results_are_independent() -> None:
    f = font(ROBOTO)
    a_text = json.dumps(f.contours(f.name("a")))
    a = render(a_text, P128)
    np.testing.assert_array_equal(a, render(parse_contours(a_text), P128))
    b = render(f.contours(f.name("b")), P128)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, render(a_text, P128))  # the returned array is not a view of a shared buffer


def test_threads_render_independently() -> None:
    f = font(LORA)
    texts = [json.dumps(f.contours(f.name(c))) for c in "aBgQ8&"] * 8
    expected = [render(t, P128) for t in texts]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda t: render(t, P128), texts))
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(e, g)


@pytest.mark.parametrize("size", [128, 224, 37])
def test_sizes(size: int) -> None:
    img = render([square(0, 0, 100, 50)], RenderParams(img_size=size))
    assert img.shape == (size, size) and img.dtype == np.uint8
    r0, r1, c0, c1 = ink_bbox(img)
    assert (c1 - c0 + 1) / (r1 - r0 + 1) == pytest.approx(2, rel=0.1)  # aspect kept


# ---- em fit ----------------------------------------------------------------------------------------


def test_em_fit_keeps_relative_size_and_baseline() -> None:
    f = font(ROBOTO)
    params = RenderParams(img_size=128, fit="em")
    big_o = render(f.contours(f.name("O")), params, f.em)
    small_o = render(f.contours(f.name("o")), params, f.em)
    dot = render(f.contours(f.name(".")), params, f.em)
    rb, rB, _, _ = ink_bbox(big_o)
    rs, rS, _, _ = ink_bbox(small_o)
    assert (rS - rs) < 0.85 * (rB - rb)  # x-height o is clearly smaller than cap-height O
    assert abs(rS - rB) <= 2  # both sit on the baseline
    r0, r1, c0, c1 = ink_bbox(dot)
    assert r1 - r0 < 0.15 * 128 and c1 - c0 < 0.15 * 128  # a dot stays a dot
    assert abs(r1 - rB) <= 2
    # ...whereas the tight fit blows the dot up to the frame.
    r0, r1, _, _ = ink_bbox(render(f.contours(f.name(".")), P128))
    assert r1 - r0 > 0.8 * 128


def test_origin_fit_puts_the_glyph_origin_on_the_left_margin() -> None:
    """origin: em scale and baseline, but x = 0 at the left margin: a glyph touching its origin (an Arabic
    letter joining the next) starts there, one with a side bearing starts further right; em centres both."""
    em = EmBox(1000, 800, -200)
    params = RenderParams(img_size=100, fit="origin", margin=0.1)
    joined = render([square(0, 0, 300, 300)], params, em)
    free = render([square(150, 0, 450, 300)], params, em)
    assert ink_bbox(joined)[2] == 10 and ink_bbox(free)[2] == 10 + 12  # 150 units at 80 px per 1000
    assert ink_bbox(joined)[:2] == ink_bbox(render([square(0, 0, 300, 300)], RenderParams(100, "em", 0.1), em))[:2]
    centred = [render(g, RenderParams(100, "em", 0.1), em) for g in ([square(0, 0, 300, 300)], [square(150, 0, 450, 300)])]
    assert np.array_equal(*centred)
    two = render([square(0, 0, 300, 300)], RenderParams(100, "tight+origin", 0.1), em)
    assert two.shape == (2, 100, 100) and np.array_equal(two[1], joined)


def test_em_fit_needs_em_box() -> None:
    with pytest.raises(ValueError, match="EmBox"):
        render([square(0, 0, 10, 10)], RenderParams(fit="em"))


def test_em_fit_clips_parts_outside_the_frame() -> None:
    em = EmBox(1000, 800, -200)
    img = render([square(0, -600, 100, 1500)], RenderParams(img_size=64, fit="em", margin=0.0), em)
    r0, r1, _, _ = ink_bbox(img)
    assert (r0, r1) == (0, 63)


def test_em_box_from_metrics() -> None:
    assert em_box_from_metrics(1000, 900, -300, 800, -200) == EmBox(1000, 800, -200)  # typo preferred
    assert em_box_from_metrics(1000, 900, -300, 0, 0) == EmBox(1000, 900, -300)  # zero typo -> hhea
    assert em_box_from_metrics(1000, 900, -300, None, None) == EmBox(1000, 900, -300)
    assert em_box_from_metrics(2048, None, None, None, None) == EmBox(2048, 2048 * 0.8, -2048 * 0.2)
    assert em_box_from_metrics(1000, 900, 300).descent == -300  # positive descender normalised
    assert em_box_from_metrics(None, None, None) == EmBox(1000, 800, -200)


# ---- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,reason",
    [
        ("not json", "JSON"),
        ('{"a": 1}', "list"),
        ("[]", "empty"),
        ("[[]]", "empty"),
        ('[[["moveTo", [[0, 0]]], ["arcTo", [[1, 1]]]]]', "unknown op"),
        ('[[["moveTo", [["a", 0]]]]]', "number"),
        ('[[["moveTo", [[0]]]]]', r"\[x, y\]"),
        ('[[["curveTo", [[0, 0], [1, 1]]]]]', "takes 3"),
        ('[[["qCurveTo", [null]]]]', "qCurveTo"),
        ('[[["moveTo", [[NaN, 0]]], ["lineTo", [[1, 1]]]]]', "JSON|finite"),
        ("[[1, 2]]", "op"),
    ],
)
def test_garbage_contours_raise_value_error(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_contours(text)
    with pytest.raises(ValueError):
        render(text, P128)


def test_parse_contours_none() -> None:
    with pytest.raises(ValueError, match="NULL"):
        parse_contours(None)


def test_render_params_validated() -> None:
    with pytest.raises(ValueError, match="fit"):
        RenderParams(fit="bbox")
    with pytest.raises(ValueError, match="margin"):
        RenderParams(margin=0.6)
    with pytest.raises(ValueError, match="img_size"):
        RenderParams(img_size=0)


def test_renderer_version_is_a_nonempty_string() -> None:
    assert isinstance(RENDERER_VERSION, str) and RENDERER_VERSION


@pytest.mark.parametrize("text", ['[{"a": 1}]', '[[[["x"], []]]]', '[[["moveTo", {"a": 1}]]]', '[[["lineTo"]]]'])
def test_valid_json_of_the_wrong_shape_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        render(text, RenderParams(img_size=32))


def test_a_zero_descent_is_a_real_metric_not_a_missing_one() -> None:
    assert em_box_from_metrics(1000, 1000, 0) == EmBox(1000.0, 1000.0, 0.0)
    assert em_box_from_metrics("2048", "1900", "-500") == EmBox(2048.0, 1900.0, -500.0)  # TEXT columns
    assert em_box_from_metrics(None, None, None) == EmBox(1000.0, 800.0, -200.0)


def test_ink_bounds_are_the_curves_extent_not_their_control_points() -> None:
    """ink_bounds (the look-alike prior's ink box): a quadratic bulge reaches half way to its control point."""
    bulge = [[["moveTo", [0, 0]], ["lineTo", [100, 0]], ["qCurveTo", [[50, 200], [0, 0]]], ["closePath", None]]]
    assert ink_bounds(json.dumps(bulge)) == pytest.approx((0, 0, 100, 100))
    assert ink_bounds(bulge) == pytest.approx((0, 0, 100, 100))
    with pytest.raises(ValueError, match="empty"):
        ink_bounds("[]")
