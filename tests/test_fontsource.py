"""`build-db --fontsource`: real @fontsource packages fetched with npm (kept in the download cache, so
only the first run downloads), one font row per weight/style, Arabic positional forms, family grouping."""

import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from glyph_train.cli import main
from glyph_train.corpus import fontsource
from glyph_train.corpus.build_db import build_db
from glyph_train.corpus.font_rows import family_key
from glyph_train.corpus.fontsource import (FontsourceFace, SubsetShaper, add_package_faces, default_cache_dir,
                                           family_sets, fetch_packages, package_faces, resolve_names)
from glyph_train.errors import GlyphTrainError

SMALL = "lalezar,lateef"  # 120 kB + 620 kB: one weight, and seven weights whose subsets say "Lateef ExtraBold"


@pytest.fixture(scope="module")
def cache() -> Path:
    path = default_cache_dir()  # $GLYPH_TRAIN_CACHE/fontsource or ~/.cache/...: kept across test runs
    if all((path / n / "metadata.json").is_file() for n in SMALL.split(",")):
        return path
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed and the packages are not in the download cache")
    if subprocess.run(["npm", "ping"], capture_output=True, timeout=60).returncode != 0:
        pytest.skip("the npm registry cannot be reached and the packages are not in the download cache")
    return path


@pytest.fixture(scope="module")
def db(cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fontsource") / "glyphs.db"
    summary = build_db(out, [], fontsource=SMALL, char_classes=frozenset({"arabic", "latin", "digit"}), jobs=2,
                       warn=pytest.fail)
    assert summary.fonts_added == 8 and summary.fonts_skipped == 0
    return out


def query(db: Path, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def test_one_font_row_per_weight_and_style(db):
    fonts = query(db, "SELECT family_name, style_name, file_name FROM fonts ORDER BY family_name, file_name")
    assert fonts == [("Lalezar", "Regular", "lalezar-400-normal")] + [
        ("Lateef", style, f"lateef-{w}-normal") for w, style in (
            (200, "ExtraLight"), (300, "Light"), (400, "Regular"), (500, "Medium"), (600, "SemiBold"),
            (700, "Bold"), (800, "ExtraBold"))]
    # each label once per font: the subsets' shared glyphs (space, ZWJ, marks) are not repeated
    assert query(db, "SELECT f_id, label FROM glyphs GROUP BY f_id, label HAVING COUNT(*) > 1") == []


def test_glyphs_of_all_subsets_in_one_row(db):
    (f_id,) = query(db, "SELECT file_hash FROM fonts WHERE family_name = 'Lalezar'")[0]
    labels = {label for (label,) in query(db, "SELECT label FROM glyphs WHERE f_id = ?", f_id)}
    assert {"65_isol", "97_isol", "48_isol"} <= labels  # latin subset
    assert {"1576_isol", "1603_init"} <= labels  # arabic subset
    assert "7840_isol" in labels  # U+1EA0 from the vietnamese subset


def test_arabic_positional_forms_are_shaped(db):
    for family in ("Lalezar", "Lateef"):
        forms = dict(query(db, "SELECT label, contours FROM glyphs JOIN fonts ON f_id = file_hash "
                               "WHERE family_name = ? AND style_name = 'Regular' AND label LIKE '1576_%'", family))
        assert set(forms) == {"1576_isol", "1576_init", "1576_medi", "1576_fina"}
        assert len(set(forms.values())) == 4  # beh's four forms are four different outlines, not isol four times
    joined = query(db, "SELECT COUNT(DISTINCT label) FROM glyphs WHERE label LIKE '%_init' OR label LIKE '%_medi'")
    assert joined[0][0] > 40


def test_family_comes_from_the_package_not_the_subset_names(cache, db):
    from fontTools.ttLib import TTFont

    subset = next((cache / "lateef" / "files").glob("lateef-arabic-800-normal.woff2"))
    assert TTFont(subset)["name"].getDebugName(1) == "Lateef ExtraBold"  # what would split the family
    families = {f for (f,) in query(db, "SELECT family_name FROM fonts")}
    assert families == {"Lalezar", "Lateef"} and {family_key(f) for f in families} == {"lalezar", "lateef"}


def test_rerun_adds_nothing(db):
    summary = build_db(db, [], fontsource="Lalezar", warn=pytest.fail)  # a family name names the package too
    assert (summary.fonts_added, summary.fonts_present) == (0, 1)


def test_a_package_with_the_older_metadata_keys_reads(db, cache, tmp_path):
    """Packages published before Fontsource 5 name themselves fontId/fontName (@fontsource/euphoria-script,
    condiment): build-db skipped them as unreadable."""
    import json

    pkg = shutil.copytree(cache / "lalezar", tmp_path / "lalezar")  # fetched by the db fixture
    meta = json.loads((pkg / "metadata.json").read_text())
    meta["fontId"], meta["fontName"] = meta.pop("id"), meta.pop("family")
    (pkg / "metadata.json").write_text(json.dumps(meta))
    (face,) = package_faces(pkg)
    (new,) = package_faces(cache / "lalezar")
    assert (face.family_name, face.file_hash, len(face.subsets)) == ("Lalezar", new.file_hash, len(new.subsets))


def test_codepoints_go_to_the_subset_whose_range_holds_them(cache):
    (face,) = package_faces(cache / "lalezar")
    shaper = SubsetShaper(face.subsets)
    cmap = shaper.cmap()
    subset_of = {i: path.name.removeprefix("lalezar-").rsplit("-", 2)[0] for i, (path, _) in enumerate(face.subsets)}
    assert subset_of[cmap[0x0628][0]] == "arabic" and subset_of[cmap[0x41][0]] == "latin"
    assert subset_of[cmap[0x0100][0]] == "latin-ext" and subset_of[cmap[0x1EA0][0]] == "vietnamese"
    assert shaper.form_outline(0x0628, "init") and shaper.glyph_outline(cmap[0x41])


def test_figure_variants_come_from_the_subset_that_has_the_digit():
    """A family's digits may sit in another subset file than its first: the variants are that file's."""
    from fontfactory import fontpkg_file

    from glyph_train.corpus.shaping import Shaper

    abril = fontpkg_file("fontpkg_abril_fatface", "AbrilFatface-Regular.ttf")
    amiri = fontpkg_file("fontpkg_amiri", "Amiri-Regular.ttf")  # has numerators and denominators
    shaper = SubsetShaper([(abril, ((0x41, 0x5A),)), (amiri, ((0x30, 0x39),))])
    variants, own = shaper.figure_variants(0x33), Shaper(amiri.read_bytes())
    assert [feature for feature, _ in variants] == ["numr", "dnom"]
    assert [(f, shaper.glyph_outline(gid)) for f, gid in variants] == \
        [(f, own.glyph_outline(gid)) for f, gid in own.figure_variants(0x33)]
    assert SubsetShaper([(abril, ((0x30, 0x39),))]).figure_variants(0x33) == []  # Abril has none


def test_family_from_another_source_is_not_added_twice(cache, tmp_path):
    faces = package_faces(cache / "lateef")
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE fonts (file_hash TEXT, family_name TEXT)")
    conn.execute("INSERT INTO fonts VALUES ('other-hash', 'Lateef Light')")  # e.g. from fontpkg
    lines: list[str] = []
    todo: list = []
    assert add_package_faces(conn, faces, todo, set(), lines.append) == 0
    assert todo == [] and lines == ["fontsource: 1 family already in the DB or the other inputs, not added "
                                    "again: Lateef"]
    # ...but a family some of whose weights came from here is completed (an interrupted run)
    known = {faces[0].file_hash}
    conn.execute("INSERT INTO fonts VALUES (?, 'Lateef')", (faces[0].file_hash,))
    assert add_package_faces(conn, faces, todo, known, pytest.fail) == 1
    assert [f.style_name for f in todo] == [f.style_name for f in faces[1:]]


def test_sets_name_the_required_families():
    sets = family_sets()
    arabic = {name for name, _ in sets["arabic"]}
    assert {"alexandria", "amiri-quran", "aref-ruqaa", "baloo-bhaijaan-2", "changa", "el-messiri", "lalezar",
            "lateef", "lemonada", "noto-naskh-arabic", "noto-nastaliq-urdu", "readex-pro", "reem-kufi",
            "scheherazade-new", "vazirmatn", "zain"} <= arabic
    # the families a check by name had missed (npm pack shows their arabic subsets)
    assert {"alyamama", "beiruti", "blaka", "blaka-hollow", "estedad", "fustat", "handjet", "oi", "vibes"} <= arabic
    assert {style for _, style in sets["arabic"]} >= {"naskh", "kufi", "ruqaa", "nastaliq", "display", "sans"}
    default = sets["default"]
    assert len(default) >= 150 and len({n for n, _ in default}) == len(default)
    assert {s for _, s in default} == {"serif", "sans", "slab", "mono", "display", "script", "handwriting"}
    names, named = resolve_names("arabic, Noto Naskh Arabic, @fontsource/lalezar")
    assert names[: len(arabic)] == [n for n, _ in sets["arabic"]] and named == {"noto-naskh-arabic", "lalezar"}
    assert len(names) == len(arabic)  # no duplicates


def test_bad_names_are_one_line_errors(tmp_path, capsys, cache):
    with pytest.raises(GlyphTrainError, match="not a package or family name"):
        resolve_names("lalezar,../etc")
    if shutil.which("npm"):
        code = main(["build-db", str(tmp_path / "x.db"), "--fontsource", "no-such-family-glyph-train-test"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "\n" not in err and "npm cannot fetch @fontsource/no-such-family-glyph-train-test" in err
        assert not (tmp_path / "x.db").exists()


def test_without_npm_one_line_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(fontsource.shutil, "which", lambda name: None)
    with pytest.raises(GlyphTrainError, match="needs npm .*apt-get install npm"):
        fetch_packages(["lalezar"], tmp_path, pytest.fail, required={"lalezar"})
    lines: list[str] = []
    assert fetch_packages(["lalezar"], tmp_path, lines.append) == [] and "apt-get install npm" in lines[0]


def test_faces_pickle_for_worker_processes(cache):
    import pickle

    face = package_faces(cache / "lalezar")[0]
    assert isinstance(face, FontsourceFace) and pickle.loads(pickle.dumps(face)) == face
