"""bench/bench_unseen.py's fixed held-out list, its family matching, the DB subsets it trains and scores
on (the source DB untouched), and its results table. (The training run itself is the benchmark.)"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_unseen as bench  # noqa: E402

from glyph_train.corpus.fontsource import family_sets, package_name  # noqa: E402


def test_held_out_list_covers_the_styles():
    arabic_styles = set(bench.HELD_OUT_ARABIC.values())
    assert len(bench.HELD_OUT_ARABIC) >= 8 and {"naskh", "kufi", "ruqaa", "nastaliq", "display"} <= arabic_styles
    assert len(bench.HELD_OUT_LATIN) >= 20
    assert set(bench.HELD_OUT_LATIN.values()) == {"serif", "sans", "slab", "mono", "display", "script",
                                                  "handwriting"}
    # every held-out family is an @fontsource package of the lists build-db knows
    listed = {name for names in family_sets().values() for name, _ in names}
    assert {package_name(f) for f in bench.HELD_OUT} <= listed


def test_the_script_set_holds_no_held_out_family_and_none_of_default():
    sets = family_sets()
    script = [name for name, _ in sets["script"]]
    assert len(script) >= 90 and len(set(script)) == len(script)
    assert {style for _, style in sets["script"]} == {"script", "handwriting"}
    assert [name for name in script if bench.held_out_of(name.replace("-", " "))] == []
    assert bench.held_out_of("patrick hand sc") == "Patrick Hand"  # what the line above would catch
    assert not set(script) & {name for name, _ in sets["default"]}


def test_the_more_set_holds_no_held_out_family_and_none_of_the_other_sets():
    sets = family_sets()
    more = [name for name, _ in sets["more"]]
    assert len(more) >= 150 and len(set(more)) == len(more)
    assert {style for _, style in sets["more"]} == {"serif", "sans", "mono", "display", "handwriting"}
    assert [name for name in more if bench.held_out_of(name.replace("-", " "))] == []
    assert bench.held_out_of("cabin sketch") == "Cabin"  # Cabin Sketch is left out for that
    assert not set(more) & {name for s in ("arabic", "default", "script") for name, _ in sets[s]}


def test_label_sets_are_files_of_well_formed_labels_and_label_font_extends_core():
    from glyph_train.corpus.db import parse_label_list
    from glyph_train.corpus.unicode_data import FIGURE_FEATURES, LABEL_FORMS

    sets = {name: parse_label_list(str(path)) for name, path in bench.LABEL_FILES.items()}
    for labels in sets.values():
        assert all(head.isdigit() and form in LABEL_FORMS for head, form in (lab.split("_") for lab in labels))
    assert len(sets["core"]) == 202 and set(sets["core"]) < set(sets["label-font"])
    extra = set(sets["label-font"]) - set(sets["core"])
    assert {f"{cp}_{feature}" for cp in range(0x30, 0x3A) for feature in FIGURE_FEATURES} < extra
    assert {"1633_isol", "1777_isol"} < extra  # Arabic-Indic and Extended Arabic-Indic one
    assert {"1878_medi", "1694_fina", "1646_isol"} < extra  # beh with small v, sad with three dots, dotless beh
    assert len(sets["label-font"]) == len(set(sets["label-font"])) == 772


def test_a_held_out_family_takes_its_variants_and_weights_along():
    assert bench.held_out_of("Reem Kufi Fun") == "Reem Kufi"
    assert bench.held_out_of("Aref Ruqaa Ink") == "Aref Ruqaa"
    assert bench.held_out_of("Lateef ExtraBold") == "Lateef"  # a weight named as a family
    assert bench.held_out_of("Cardo") == "Cardo"
    assert bench.held_out_of("Amiri") is None and bench.held_out_of("Cabinet") is None
    assert bench.held_out_of(None) is None


def test_subsets_split_fonts_and_labels_and_leave_the_source_alone(tmp_path):
    from tests.dbfactory import DEFAULT_FONTS, write_db

    info = write_db(tmp_path / "src.db", fonts=(DEFAULT_FONTS[0], DEFAULT_FONTS[4]))
    before = info.path.read_bytes()
    with sqlite3.connect(info.path) as conn:
        fonts = dict(conn.execute("SELECT file_hash, family_name FROM fonts"))
    roboto = [h for h, f in fonts.items() if f == "Roboto"]
    bench.write_subset(info.path, tmp_path / "part.db", roboto, ["65_isol", "1576_init", "97_isol"])
    with sqlite3.connect(tmp_path / "part.db") as conn:
        assert {f for (f,) in conn.execute("SELECT family_name FROM fonts")} == {"Roboto"}
        assert {lab for (lab,) in conn.execute("SELECT label FROM glyphs")} == {"65_isol", "97_isol"}
        assert conn.execute("SELECT COUNT(*) FROM glyphs").fetchone()[0] == 2 * len(roboto)
    bench.write_subset(info.path, tmp_path / "all.db", roboto, None)  # --others-per-label: every label
    with sqlite3.connect(tmp_path / "all.db") as conn, sqlite3.connect(info.path) as src:
        every = src.execute(f"SELECT COUNT(*) FROM glyphs WHERE f_id IN ({','.join('?' * len(roboto))})", roboto)
        assert conn.execute("SELECT COUNT(*) FROM glyphs").fetchone()[0] == every.fetchone()[0] > 2 * len(roboto)
    assert info.path.read_bytes() == before
    with pytest.raises(SystemExit, match="lacks held-out families"):
        bench.split_fonts(info.path)


def test_results_table_has_the_reported_rows_and_target_checks():
    values = {"top1": 0.9, "top1_equiv": 0.95, "top5": 0.99, "hit_at_10": 0.99, "map_at_r": 0.6,
              "num_queries": 10, "num_without_positive": 0}
    metrics = {**values, "by_char_class": {cc: values for cc in ("latin", "arabic", "digit", "other")},
               "by_family": {"Lalezar": values, "Cardo": values}}
    text = bench.table({"set": "core", "labels": 202, "train_wall_s": 60.0, "metrics": metrics})
    rows = [line.split(" | ")[0].strip("| *") for line in text.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["overall", "latin", "arabic", "digit", "Cardo (serif)", "Lalezar (display)"]
    assert "top1 0.900 < 0.93 (NOT met)" in text and "hit_at_10 0.990 ≥ 0.98 (met)" in text
