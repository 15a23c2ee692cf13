"""`glyph-train build-db` on real fontpkg fonts, plus collections, CFF and WOFF2 fonts made from them."""

import hashlib
import json
import sqlite3
from importlib.resources import files
from pathlib import Path

import pytest
from fontTools.feaLib.builder import addOpenTypeFeaturesFromString
from fontTools.fontBuilder import FontBuilder
from fontTools.pens.boundsPen import BoundsPen
from fontTools.pens.t2CharStringPen import T2CharStringPen
from fontTools.ttLib import TTFont
from fontTools.ttLib.ttCollection import TTCollection

from glyph_train.cli import main
from glyph_train.corpus.build_db import build_db
from glyph_train.corpus.fonts import fontpkg_font_files
from glyph_train.corpus.unicode_data import FIGURE_FEATURES

AMIRI = Path(str(files("fontpkg_amiri") / "files" / "Amiri-Regular.ttf"))
ABRIL = Path(str(files("fontpkg_abril_fatface") / "files" / "AbrilFatface-Regular.ttf"))
CAVEAT = Path(str(files("fontpkg_caveat") / "files" / "Caveat[wght].ttf"))  # variable: Regular, Bold


def rows(db: Path, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def glyphs_by_label(db: Path, f_id: str | None = None) -> dict[str, tuple]:
    sql = "SELECT label, contours, joining_group, char_class FROM glyphs"
    found = rows(db, sql + " WHERE f_id = ?", f_id) if f_id else rows(db, sql)
    return {label: tuple(rest) for label, *rest in found}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def amiri_db(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("amiri") / "glyphs.db"
    summary = build_db(db, [AMIRI])
    assert summary.fonts_added == 1 and summary.glyphs > 1000
    return db


def test_schema_and_font_row(amiri_db):
    with sqlite3.connect(amiri_db) as conn:
        fonts_cols = [r[1] for r in conn.execute("PRAGMA table_info(fonts)")]
        glyph_cols = [r[1] for r in conn.execute("PRAGMA table_info(glyphs)")]
        font = dict(zip(fonts_cols, conn.execute("SELECT * FROM fonts").fetchone()))
    assert fonts_cols[:13] == ["file_hash", "file_name", "family_name", "style_name", "upem", "ascent", "descent",
                               "line_gap", "typo_ascent", "typo_descent", "x_height", "cap_height", "excluded"]
    assert glyph_cols == ["glyph_id", "f_id", "label", "contours", "joining_group", "char_class"]
    assert font["file_hash"] == sha256(AMIRI)  # a static single-face font keeps its plain file hash
    assert (font["file_name"], font["family_name"], font["style_name"]) == ("Amiri-Regular.ttf", "Amiri", "Regular")
    assert font["excluded"] == 0 and font["instance"] is None
    tt = TTFont(AMIRI)
    assert (font["upem"], font["ascent"], font["descent"], font["typo_ascent"], font["x_height"]) == (
        tt["head"].unitsPerEm, tt["hhea"].ascent, tt["hhea"].descent, tt["OS/2"].sTypoAscender, tt["OS/2"].sxHeight)


def test_arabic_letters_get_their_joining_forms(amiri_db):
    glyphs = glyphs_by_label(amiri_db)
    beh = [glyphs[f"1576_{form}"] for form in ("isol", "init", "medi", "fina")]
    assert len({contours for contours, _, _ in beh}) == 4  # Amiri draws four different shapes
    assert {(group, cls) for _, group, cls in beh} == {("BEH", "arabic")}
    # ALEF joins on the right only: isol and fina, never init/medi.
    assert {label for label in glyphs if label.startswith("1575_")} == {"1575_isol", "1575_fina"}
    assert glyphs["1577_fina"][1] == "TEH_MARBUTA"
    assert glyphs["1569_isol"][1:] == ("NO_JOIN", "arabic")  # HAMZA does not join
    assert glyphs["1614_isol"][1:] == ("NO_JOIN", "diacritic")  # FATHA
    assert glyphs["65_isol"][1:] == ("NO_JOIN", "latin")
    assert glyphs["1633_isol"][2] == "digit"  # ARABIC-INDIC DIGIT ONE


def test_rows_cover_printable_bmp_cmap_only(amiri_db):
    labels = {label for (label,) in rows(amiri_db, "SELECT label FROM glyphs")}
    cps = {int(label.split("_")[0]) for label in labels}
    assert {f"{cp}_numr" for cp in range(0x30, 0x3A)} <= labels  # Amiri's numerators
    assert 32 not in cps and 0xA0 not in cps  # whitespace has no outline and no row
    assert not any(0xFB50 <= cp <= 0xFEFF for cp in cps)  # presentation forms come from shaping
    assert all(cp <= 0xFFFF for cp in cps)
    latin = [label for label in labels if int(label.split("_")[0]) < 0x600]
    assert all(label.endswith("_isol") or label.split("_")[1] in FIGURE_FEATURES for label in latin)
    cmap = TTFont(AMIRI).getBestCmap()
    assert cps <= set(cmap)
    ids = [glyph_id for (glyph_id,) in rows(amiri_db, "SELECT glyph_id FROM glyphs")]
    assert len(ids) == len(set(ids)) == len(labels)  # one row per label in one font


def read_users_format(text: str) -> list[list[tuple[float, float]]]:
    """A strict reader of the users' (old system's) contours format, written from its spec, not our code:
    moveTo/lineTo take ONE point [x, y], curveTo three, qCurveTo off-curve points then an end (null only
    in an all-off-curve contour), closePath null. Returns each subpath's points."""
    def point(p) -> tuple[float, float]:
        assert isinstance(p, list) and len(p) == 2 and all(type(v) in (int, float) for v in p), p
        return (p[0], p[1])

    out = []
    for subpath in json.loads(text):
        points = []
        for op, payload in subpath:
            if op in ("moveTo", "lineTo"):
                points.append(point(payload))
            elif op == "curveTo":
                assert len(payload) == 3
                points += map(point, payload)
            elif op == "qCurveTo":
                assert payload and (payload[-1] is not None or (len(payload) > 2 and subpath[0][0] == "qCurveTo"))
                points += [point(p) for p in payload if p is not None]
            else:
                assert op == "closePath" and payload is None, (op, payload)
        assert subpath[-1] == ["closePath", None]
        out.append(points)
    return out


def test_figure_variants_get_rows_of_their_own_once_per_glyph(tmp_path):
    """Numerators, superiors ... are unmapped glyphs reached by GSUB; each gets a `{cp}_{feature}` row with
    the glyph that feature gives, once: superiors that are the numerators' glyphs are not drawn twice, and a
    glyph the cmap maps (U+00B3's superior three) is that character's row, not a variant."""
    font = TTFont(ABRIL)
    for table in font["cmap"].tables:  # a, b, c become unmapped glyphs standing in for the variants
        for cp in (0x61, 0x62, 0x63):
            table.cmap.pop(cp, None)
    addOpenTypeFeaturesFromString(font, "\n".join([
        "languagesystem DFLT dflt;", "languagesystem latn dflt;",
        "feature numr { sub zero by a; } numr;",
        "feature sups { sub zero by a; sub one by c; } sups;",  # zero's superior is its numerator
        "feature dnom { sub one by b; sub two by two; } dnom;",  # two's denominator is two itself
        "feature sinf { sub two by d; } sinf;",  # d is mapped: the letter's glyph, not a variant
    ]))
    src = tmp_path / "figures.ttf"
    font.save(src)
    db = tmp_path / "glyphs.db"
    build_db(db, [src])
    got = glyphs_by_label(db)
    variants = sorted(label for label in got if label.split("_")[1] in FIGURE_FEATURES)
    assert variants == ["48_numr", "49_dnom", "49_sups"]
    build_db(tmp_path / "abril.db", [ABRIL])
    letters = glyphs_by_label(tmp_path / "abril.db")
    assert (got["48_numr"][0], got["49_dnom"][0], got["49_sups"][0]) == \
        (letters["97_isol"][0], letters["98_isol"][0], letters["99_isol"][0])
    assert got["48_numr"][1:] == ("NO_JOIN", "digit")
    assert "97_isol" not in got and got["100_isol"] == letters["100_isol"]


def test_every_row_build_db_writes_parses_as_the_users_format(amiri_db):
    texts = [c for (c,) in rows(amiri_db, "SELECT contours FROM glyphs")]
    assert len(texts) > 100
    for text in texts:
        assert read_users_format(text)


def test_contours_json_is_pen_protocol_in_font_units(amiri_db):
    (contours,) = rows(amiri_db, "SELECT contours FROM glyphs WHERE label = '79_isol'")[0]  # O
    assert contours.startswith('[[["moveTo",[') and not contours.startswith('[[["moveTo",[[')
    subpaths = json.loads(contours)
    assert len(subpaths) == 2  # outer and inner contour
    for subpath in subpaths:
        assert subpath[0][0] == "moveTo" and subpath[-1] == ["closePath", None]
        assert {op for op, _ in subpath} <= {"moveTo", "lineTo", "qCurveTo", "curveTo", "closePath"}
    ys = [pt[1] for pts in read_users_format(contours) for pt in pts]
    assert -30 < min(ys) and 600 < max(ys) < 700  # y up, cap height scale of a 1000-unit em


def test_variable_font_named_instances_are_separate_fonts(tmp_path):
    db = tmp_path / "var.db"
    assert main(["build-db", str(db), str(CAVEAT), "--charset", "latin", "--jobs", "1"]) == 0
    fonts = rows(db, "SELECT file_hash, family_name, style_name, instance FROM fonts ORDER BY style_name")
    assert [(family, style, instance) for _, family, style, instance in fonts] == [
        ("Caveat", "Bold", "wght=700"), ("Caveat", "Regular", "wght=400")]
    bold, regular = (glyphs_by_label(db, file_hash) for file_hash, *_ in fonts)
    assert bold.keys() == regular.keys() and {cls for _, _, cls in bold.values()} == {"latin"}
    assert bold["65_isol"][0] != regular["65_isol"][0]  # outlines at each instance's location


def test_collection_gives_every_face(tmp_path):
    ttc = tmp_path / "pair.ttc"
    collection = TTCollection()
    collection.fonts = [TTFont(ABRIL), TTFont(AMIRI)]
    collection.save(ttc)
    db = tmp_path / "ttc.db"
    summary = build_db(db, [ttc], char_classes=frozenset({"digit"}))
    assert summary.fonts_added == 2
    fonts = rows(db, "SELECT face_index, family_name, file_hash FROM fonts ORDER BY face_index")
    assert [(index, family) for index, family, _ in fonts] == [(0, "Abril Fatface"), (1, "Amiri")]
    assert len({file_hash for *_, file_hash in fonts}) == 2
    amiri_digits = glyphs_by_label(db, fonts[1][2])
    assert "1633_isol" in amiri_digits and "49_isol" in amiri_digits


def build_cff_font(path: Path, chars: str = "AOb") -> None:
    """A small OTF (CFF outlines) from Abril's glyphs, so cubic outlines are covered without shipping one."""
    src = TTFont(ABRIL)
    glyphset, cmap = src.getGlyphSet(), src.getBestCmap()
    names = [".notdef"] + [cmap[ord(c)] for c in chars]
    charstrings, metrics = {}, {}
    for name in names:
        pen, bounds = T2CharStringPen(glyphset[name].width, glyphset), BoundsPen(glyphset)
        glyphset[name].draw(pen)
        glyphset[name].draw(bounds)
        charstrings[name] = pen.getCharString()
        metrics[name] = (glyphset[name].width, bounds.bounds[0] if bounds.bounds else 0)
    builder = FontBuilder(src["head"].unitsPerEm, isTTF=False)
    builder.setupGlyphOrder(names)
    builder.setupCharacterMap({ord(c): cmap[ord(c)] for c in chars})
    builder.setupCFF("TestCubic-Regular", {"FullName": "Test Cubic"}, charstrings, {})
    builder.setupHorizontalMetrics(metrics)
    builder.setupHorizontalHeader(ascent=src["hhea"].ascent, descent=src["hhea"].descent)
    builder.setupNameTable({"familyName": "Test Cubic", "styleName": "Regular"})
    builder.setupOS2(sTypoAscender=800, sTypoDescender=-200, sxHeight=500, sCapHeight=700)
    builder.setupPost()
    builder.save(path)


def test_cff_and_woff2_fonts(tmp_path):
    otf, woff2 = tmp_path / "cubic.otf", tmp_path / "abril.woff2"
    build_cff_font(otf)
    web = TTFont(ABRIL)
    web.flavor = "woff2"
    web.save(woff2)
    db = tmp_path / "formats.db"
    build_db(db, [tmp_path])  # a directory: searched for every font format
    (cff_hash,) = rows(db, "SELECT file_hash FROM fonts WHERE family_name = 'Test Cubic'")[0]
    cubic = glyphs_by_label(db, cff_hash)
    assert set(cubic) == {"65_isol", "79_isol", "98_isol"}
    assert '"curveTo"' in cubic["79_isol"][0] and '"qCurveTo"' not in cubic["79_isol"][0]
    (woff_hash,) = rows(db, "SELECT file_hash FROM fonts WHERE file_name = 'abril.woff2'")[0]
    reference = tmp_path / "reference.db"
    build_db(reference, [ABRIL])
    assert glyphs_by_label(db, woff_hash) == glyphs_by_label(reference)  # same outlines as the TTF


def test_rerun_adds_nothing_and_inputs_are_untouched(tmp_path, capsys):
    db, before = tmp_path / "g.db", sha256(ABRIL)
    assert main(["build-db", str(db), str(ABRIL), str(CAVEAT), "--charset", "latin,digit"]) == 0
    first = rows(db, "SELECT * FROM glyphs ORDER BY glyph_id")
    assert "added 3 fonts (0 already present, 0 skipped)" in capsys.readouterr().out
    assert main(["build-db", str(db), str(ABRIL), str(CAVEAT), "--charset", "latin,digit"]) == 0
    assert "added 0 fonts (3 already present, 0 skipped), 0 glyphs" in capsys.readouterr().out
    assert rows(db, "SELECT * FROM glyphs ORDER BY glyph_id") == first
    assert sha256(ABRIL) == before


def test_worker_processes_write_the_same_rows_in_the_same_order(tmp_path):
    serial, parallel = tmp_path / "serial.db", tmp_path / "parallel.db"
    build_db(serial, [CAVEAT, ABRIL], char_classes=frozenset({"digit"}), jobs=1)
    build_db(parallel, [CAVEAT, ABRIL], char_classes=frozenset({"digit"}), jobs=2)
    sql = "SELECT glyph_id, f_id, label, contours FROM glyphs ORDER BY glyph_id"
    assert rows(serial, sql) == rows(parallel, sql) != []


def test_charset_keeps_only_those_classes(tmp_path):
    db = tmp_path / "c.db"
    assert main(["build-db", str(db), str(AMIRI), "--charset", "digit, punctuation", "--jobs", "1"]) == 0
    assert {cls for (cls,) in rows(db, "SELECT DISTINCT char_class FROM glyphs")} == {"digit", "punctuation"}


def test_font_without_rows_in_charset_is_skipped_not_added(tmp_path):
    db, lines = tmp_path / "c.db", []
    summary = build_db(db, [ABRIL], char_classes=frozenset({"arabic"}), warn=lines.append)
    assert (summary.fonts_added, summary.fonts_skipped) == (0, 1)
    assert len(lines) == 1 and "AbrilFatface-Regular.ttf" in lines[0] and "--charset" in lines[0]
    assert build_db(db, [ABRIL]).fonts_added == 1  # so a later run without the filter still adds it


def test_unknown_charset_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["build-db", str(tmp_path / "x.db"), str(ABRIL), "--charset", "latin,klingon"])
    assert exc.value.code == 2 and "klingon" in capsys.readouterr().err


def test_corrupt_font_is_skipped_with_one_line(tmp_path, capsys):
    (tmp_path / "garbage.ttf").write_bytes(b"definitely not a font" * 50)
    (tmp_path / "truncated.ttf").write_bytes(ABRIL.read_bytes()[:3000])
    (tmp_path / "good.ttf").write_bytes(ABRIL.read_bytes())
    db = tmp_path / "g.db"
    assert main(["build-db", str(db), str(tmp_path), "--charset", "latin"]) == 0
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in err
    assert any("garbage.ttf" in line for line in lines) and any("truncated.ttf" in line for line in lines)
    assert "added 1 fonts (0 already present, 2 skipped)" in out


def test_only_corrupt_fonts_fails(tmp_path, capsys):
    (tmp_path / "garbage.otf").write_bytes(b"\0" * 100)
    assert main(["build-db", str(tmp_path / "g.db"), str(tmp_path)]) == 2
    assert "no usable fonts" in capsys.readouterr().err


@pytest.mark.parametrize("make_input, message", [
    (lambda tmp: tmp / "missing.ttf", "no such file or directory"),
    (lambda tmp: tmp, "no font files"),  # an existing directory without fonts
])
def test_bad_input_path_is_one_line_error(tmp_path, capsys, make_input, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    db = tmp_path / "out.db"
    assert main(["build-db", str(db), str(make_input(empty))]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not db.exists()  # nothing is created when there is nothing to read


THEIR_SCHEMA = """
CREATE TABLE fonts (file_hash TEXT PRIMARY KEY, file_name TEXT, family_name TEXT, style_name TEXT, upem INTEGER,
    ascent INTEGER, descent INTEGER, line_gap INTEGER, typo_ascent INTEGER, typo_descent INTEGER,
    x_height INTEGER, cap_height INTEGER, excluded INTEGER DEFAULT 0);
CREATE TABLE glyphs (glyph_id INTEGER UNIQUE, f_id TEXT, label TEXT, contours TEXT, joining_group TEXT{extra});
INSERT INTO fonts (file_hash, file_name) VALUES ('old', 'old.ttf');
INSERT INTO glyphs (glyph_id, f_id, label) VALUES (41, 'old', '65_isol');
"""


def test_adds_to_a_db_made_elsewhere(tmp_path):
    db = tmp_path / "theirs.db"
    with sqlite3.connect(db) as conn:  # seed schema only: no face_index/instance, glyph_id not the rowid
        conn.executescript(THEIR_SCHEMA.format(extra=", char_class TEXT"))
    assert build_db(db, [ABRIL], char_classes=frozenset({"digit"})).glyphs == 10
    assert [i for (i,) in rows(db, "SELECT glyph_id FROM glyphs ORDER BY glyph_id")] == list(range(41, 52))


def test_db_with_missing_columns_is_refused(tmp_path, capsys):
    db = tmp_path / "theirs.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(THEIR_SCHEMA.format(extra=""))
    assert main(["build-db", str(db), str(ABRIL)]) == 2
    assert "glyphs lacks columns char_class" in capsys.readouterr().err
    assert rows(db, "SELECT COUNT(*) FROM glyphs") == [(1,)]


def test_output_that_is_not_sqlite_is_refused(tmp_path, capsys):
    out = tmp_path / "notes.db"
    out.write_text("my notes, not a database\n" * 100)
    assert main(["build-db", str(out), str(ABRIL)]) == 2
    assert "not" in capsys.readouterr().err and out.read_text().startswith("my notes")


def test_fontpkg_discovery_finds_the_installed_corpus():
    found = fontpkg_font_files()
    names = {path.name for path in found}
    assert {"Amiri-Regular.ttf", "Caveat[wght].ttf", "AbrilFatface-Regular.ttf"} <= names
    assert len(found) >= 50 and all(path.is_file() for path in found)


def test_an_unrelated_sqlite_file_is_refused_and_left_untouched(tmp_path, capsys):
    import sqlite3

    from glyph_train.cli import main

    other = tmp_path / "notes.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    assert main(["build-db", str(other), "--fontpkg"]) == 2
    assert "without fonts/glyphs tables" in capsys.readouterr().err
    assert other.read_bytes() == before
