"""Outlines drawn through HarfBuzz against fontTools' own reading of the same fonts."""

import json
from importlib.resources import files
from pathlib import Path

import pytest
from fontTools.pens.areaPen import AreaPen
from fontTools.pens.boundsPen import BoundsPen
from fontTools.pens.recordingPen import DecomposingRecordingPen
from fontTools.ttLib import TTFont

from glyph_train.corpus.shaping import ContourPen, Shaper

AMIRI = Path(str(files("fontpkg_amiri") / "files" / "Amiri-Regular.ttf"))
ROBOTO = Path(str(files("fontpkg_roboto") / "files" / "Roboto[wdth,wght].ttf"))


def geometry(segments):
    """Signed area and bounds: equal for equal outlines however their quadratic chains are split."""
    area, bounds = AreaPen(), BoundsPen(None)
    for pen in (area, bounds):
        for op, pts in segments:
            getattr(pen, op)(*[tuple(p) if p is not None else None for p in pts])
    return area.value, bounds.bounds


def flat(contours: str):
    """The users' format (one point for moveTo/lineTo, null for closePath) as pen-protocol segments."""
    return [[op, [pts] if op in ("moveTo", "lineTo") else pts or []]
            for subpath in json.loads(contours or "[]") for op, pts in subpath]


def assert_same_geometry(ours, theirs, tol):
    (area1, box1), (area2, box2) = geometry(ours), geometry(theirs)
    assert area1 == pytest.approx(area2, rel=1e-3, abs=tol)
    assert box1 == pytest.approx(box2, abs=tol)


def test_static_truetype_outlines_match_fonttools_decomposed():
    shaper, font = Shaper(AMIRI.read_bytes()), TTFont(AMIRI)
    glyphset, cmap = font.getGlyphSet(), font.getBestCmap()
    for cp, gid in shaper.cmap().items():
        pen = DecomposingRecordingPen(glyphset)
        glyphset[cmap[cp]].draw(pen)
        assert_same_geometry(flat(shaper.glyph_outline(gid)), pen.value, tol=0.06)


def test_quadratic_chains_are_rebuilt_like_fonttools():
    shaper, font = Shaper(AMIRI.read_bytes()), TTFont(AMIRI)
    glyphset, cmap = font.getGlyphSet(), font.getBestCmap()
    pen = DecomposingRecordingPen(glyphset)
    glyphset[cmap[ord("O")]].draw(pen)
    ours = flat(shaper.glyph_outline(shaper.cmap()[ord("O")]))
    assert ours == [[op, [list(p) for p in pts]] for op, pts in pen.value]


@pytest.mark.parametrize("location", [{"wght": 100.0, "wdth": 100.0}, {"wght": 900.0, "wdth": 75.0}])
def test_variable_outlines_match_fonttools_at_the_instance(location):
    shaper, font = Shaper(ROBOTO.read_bytes(), 0, location), TTFont(ROBOTO)
    glyphset, cmap = font.getGlyphSet(location=location), font.getBestCmap()
    for ch in "AOgé8&ßЖΩ":
        pen = DecomposingRecordingPen(glyphset)
        glyphset[cmap[ord(ch)]].draw(pen)
        assert_same_geometry(flat(shaper.glyph_outline(shaper.cmap()[ord(ch)])), pen.value, tol=0.2)


def test_arabic_positional_forms_differ_and_start_at_origin():
    shaper = Shaper(AMIRI.read_bytes())
    beh = {form: shaper.form_outline(0x0628, form) for form in ("isol", "init", "medi", "fina")}
    assert len(set(beh.values())) == 4
    for outline in beh.values():
        (xmin, _, xmax, _) = geometry(flat(outline))[1]
        assert -200 < xmin < xmax < 1500  # placed near the origin, not at ZWJ's pen position


def test_space_draws_nothing():
    shaper = Shaper(AMIRI.read_bytes())
    assert shaper.glyph_outline(shaper.cmap()[0x20]) == ""


def test_pen_records_cubic_offsets_and_all_off_curve_contours():
    pen = ContourPen()
    pen.moveTo((0.0, 0.0))
    pen.curveTo((1.0, 2.0), (3.25, 4.0), (5.0, 6.0))
    pen.lineTo((0.0, 0.0))
    pen.closePath()
    pen.offset(10.0, -0.5)
    pen.qCurveTo((0.0, 0.0), (10.0, 0.0), (10.0, 10.0), None)  # fontTools' all-off-curve contour
    pen.closePath()
    assert json.loads(pen.json()) == [
        [["moveTo", [0, 0]], ["curveTo", [[1, 2], [3.25, 4], [5, 6]]],
         ["closePath", None]],  # HarfBuzz's explicit closing line is implied by closePath
        [["qCurveTo", [[10, -0.5], [20, -0.5], [20, 9.5], None]], ["closePath", None]],
    ]
    assert ContourPen().json() == ""


def test_forms_of_a_font_without_space_or_zwj_glyphs(tmp_path):
    """With no space glyph to hide ZWJ behind, HarfBuzz deletes ZWJ and merges its cluster into the letter's:
    the medial and final forms must still be found (build-db used to lose them), the same ones as with ZWJ."""
    from fontTools import subset

    font = TTFont(AMIRI)
    options = subset.Options()
    options.layout_features = ["*"]
    options.notdef_outline = True
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=[0x0628, 0x0644, 0x0647])  # beh, lam, heh: no U+0020, no U+200D
    subsetter.subset(font)
    font.save(tmp_path / "bare.ttf")
    bare, full = Shaper((tmp_path / "bare.ttf").read_bytes()), Shaper(AMIRI.read_bytes())
    assert 0x20 not in bare.cmap() and 0x200D not in bare.cmap()
    for form in ("init", "medi", "fina"):
        outline = bare.form_outline(0x0628, form)
        assert outline and outline != bare.form_outline(0x0628, "isol"), form
        assert_same_geometry(flat(outline), flat(full.form_outline(0x0628, form)), tol=1.0)
        assert len(bare.form_glyphs(0x0628, form)) == 1
