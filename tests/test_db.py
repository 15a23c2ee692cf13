"""db.py: read-only open + schema validation, skip counts, filters and their order, deterministic --limit."""

from __future__ import annotations

import argparse
import shutil
import sqlite3
from collections import Counter

import pytest

from dbfactory import write_db, write_db_without, write_empty_db
from glyph_train.cache.splits import split_glyphs
from glyph_train.corpus.db import (OTHER_LABEL, GlyphFilter, add_filter_arguments, fetch_contours, filter_from_args,
                                   iter_contours, open_readonly, select_glyphs)
from glyph_train.corpus.font_rows import family_from_file_name
from glyph_train.errors import GlyphTrainError


@pytest.fixture(scope="module")
def dirty_db(tmp_path_factory):
    """Real outlines plus every kind of row a reader must skip or a filter targets."""
    path = tmp_path_factory.mktemp("db") / "glyphs.db"
    info = write_db(path, bad_rows=True, exclude_font=True, shaped=True, orphan_rows=True)
    return path, info


def test_open_rejects_bad_files_with_one_line_naming_them(tmp_path):
    cases = {
        tmp_path / "missing.db": "no such file",
        tmp_path: "directory",
    }
    text = tmp_path / "notes.db"
    text.write_text("family,label\nRoboto,65_isol\n")
    cases[text] = "not a SQLite database"
    empty_file = tmp_path / "zero.db"
    empty_file.write_bytes(b"")
    cases[empty_file] = "empty file"
    cases[write_empty_db(tmp_path / "empty.db")] = "glyphs table is empty"
    cases[write_db_without(tmp_path / "nocontours.db", "glyphs", ("contours", "label"))] = \
        "table glyphs lacks column(s) label, contours"
    cases[write_db_without(tmp_path / "nofonts.db", "fonts", ())] = "missing table(s) fonts"
    for path, expected in cases.items():
        with pytest.raises(GlyphTrainError) as err:
            open_readonly(path)
        msg = str(err.value)
        assert expected in msg and str(path) in msg and "\n" not in msg, msg


def test_connection_is_read_only(dirty_db):
    conn = open_readonly(dirty_db[0])
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM glyphs")
    conn.close()


def test_skips_are_counted_by_reason(dirty_db):
    path, info = dirty_db
    sel = select_glyphs(path)
    s = sel.stats
    assert s.rows == info.rows
    assert s.excluded_font == info.excluded_rows and s.excluded_fonts == 1
    assert s.missing_font == info.bad["missing_font"]
    assert (s.null_contours, s.invalid_contours, s.empty_contours) == (
        info.bad["null_contours"], info.bad["invalid_contours"], info.bad["empty_contours"])
    assert s.selected == len(sel.glyphs) == info.good
    assert [g.glyph_id for g in sel.glyphs] == sorted(g.glyph_id for g in sel.glyphs)
    assert {g.family for g in sel.glyphs} == info.families
    assert "1 null contours" in s.summary() and "67 excluded font" in s.summary()
    assert sel.skipped == {**info.bad, "excluded_font": info.excluded_rows}


@pytest.mark.parametrize("file_name, family", [
    ("Amiri-Bold.ttf", "Amiri"), ("Roboto[wdth,wght].ttf", "Roboto"), ("NotoSansArabic-Regular.otf", "NotoSansArabic"),
    ("Inter-VariableFont_opsz,wght.ttf", "Inter"), ("fonts/Lora-Italic[wght].woff2", "Lora"), ("Scheherazade.TTF", "Scheherazade"),
    ("", None), (None, None), ("-Bold.ttf", None)])
def test_family_from_file_name(file_name, family):
    assert family_from_file_name(file_name) == family


def test_null_family_names_come_from_file_names_and_keep_families_on_one_side_of_the_split(tmp_path):
    path = tmp_path / "g.db"
    write_db(path, latin="ABCD", arabic=(), null_family=True)
    sel = select_glyphs(path)
    file_names = dict(sqlite3.connect(path).execute("SELECT file_hash, file_name FROM fonts").fetchall())
    assert {g.family for g in sel.glyphs} == {"Roboto", "Lora", "Amiri", "Inter", "NotoSansArabic"}
    assert sel.stats.family_from_file_name == 7 and sel.stats.family_from_hash == 0
    assert "7 font(s) without family_name: family taken from the file name" in sel.stats.summary()
    for seed in range(8):  # Roboto and Lora have two styles each (two fonts rows, one file name)
        split = split_glyphs(sel.glyphs, "font", 0.3, seed)
        train = {file_names[sel.glyphs[i].font] for i in split.train}
        val = {file_names[sel.glyphs[i].font] for i in split.validation}
        assert val and not train & val, f"seed {seed}: {train & val} on both sides of the split"


def test_family_falls_back_to_font_hash_without_family_or_file_name(tmp_path):
    path = tmp_path / "g.db"
    write_db(path, latin="AB", arabic=(), null_family=True)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE fonts SET file_name = NULL")
    conn.close()
    sel = select_glyphs(path)
    assert all(g.family == g.font for g in sel.glyphs)
    assert sel.stats.family_from_hash == 7 and "7 font(s) without family_name or file_name" in sel.stats.summary()


def test_missing_optional_columns_get_defaults(tmp_path):
    path = write_db_without(tmp_path / "nocc.db", "glyphs", ("char_class", "joining_group"))
    (g,) = select_glyphs(path).glyphs
    assert (g.char_class, g.joining_group, g.family) == ("other", "NO_JOIN", "F")


def test_content_filters(dirty_db, tmp_path):
    path, info = dirty_db
    arabic = select_glyphs(path, GlyphFilter(char_classes=("arabic",)))
    assert arabic.glyphs and {g.char_class for g in arabic.glyphs} == {"arabic"}
    assert arabic.stats.char_class_filtered == info.good - len(arabic.glyphs)

    shaped = select_glyphs(path, GlyphFilter(exclude_shaped=True))
    assert shaped.stats.shaped_filtered == info.shaped_rows > 0
    assert not any(g.label.endswith("_shaped") for g in shaped.glyphs)

    listed = select_glyphs(path, GlyphFilter(labels=("65_isol", "1576_init", "no_such_label")))
    assert {g.label for g in listed.glyphs} == {"65_isol", "1576_init"}
    assert listed.stats.unknown_labels == 1

    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("# wanted\n65_isol\n\n1576_init\n")
    parser = argparse.ArgumentParser()
    add_filter_arguments(parser)
    args = parser.parse_args(["--labels", str(labels_file), "--char-classes", "latin,arabic", "--drop-singletons"])
    flt = filter_from_args(args)
    assert flt.labels == ("65_isol", "1576_init") and flt.char_classes == ("latin", "arabic") and flt.min_count == 2
    with pytest.raises(GlyphTrainError, match="not found"):
        filter_from_args(parser.parse_args(["--labels", str(tmp_path / "nope.txt")]))


def test_others_per_label_keeps_a_seeded_sample_of_each_other_label_as_one_class_but_no_homoglyphs(tmp_path):
    """--others-per-label N: rows outside --labels become OTHER_LABEL, at most N per label, chosen by the
    seed; a label drawn with a kept label's very outline (a Cyrillic а that is the font's a) stays out,
    since as OTHER_LABEL it would teach that an a is not an a."""
    path = tmp_path / "glyphs.db"
    info = write_db(path)
    conn = sqlite3.connect(path)
    # Cyrillic small a (U+0430) drawn with each font's own Latin a: a homoglyph of a kept label
    rows = conn.execute("SELECT f_id, contours FROM glyphs WHERE label = '97_isol'").fetchall()
    conn.executemany("INSERT INTO glyphs VALUES (?, ?, '1072_isol', ?, 'NO_JOIN', 'cyrillic')",
                     [(10_000_000 + k, f, c) for k, (f, c) in enumerate(rows)])
    conn.commit()
    conn.close()
    wanted = ("97_isol", "98_isol", "1576_init")
    plain = select_glyphs(path, GlyphFilter(labels=wanted))
    sel = select_glyphs(path, GlyphFilter(labels=wanted, others_per_label=2, seed=1))
    others = [g for g in sel.glyphs if g.label == OTHER_LABEL]
    assert [g for g in sel.glyphs if g.label != OTHER_LABEL] == plain.glyphs
    assert [g.glyph_id for g in sel.glyphs] == sorted(g.glyph_id for g in sel.glyphs)
    other_labels = info.labels - set(wanted)
    assert len(others) == 2 * len(other_labels) == sel.stats.others == sel.label_counts[OTHER_LABEL]
    assert sel.stats.other_labels == len(other_labels) and sel.stats.homoglyph_labels == 1
    assert sel.stats.label_filtered == plain.stats.label_filtered - len(others)
    assert "kept as <other> (1 homoglyph label(s) left out)" in sel.stats.summary()
    # who they were: every other label twice, the homoglyph never
    source = dict(sqlite3.connect(path).execute("SELECT glyph_id, label FROM glyphs").fetchall())
    assert Counter(source[g.glyph_id] for g in others) == {lab: 2 for lab in other_labels}
    again = select_glyphs(path, GlyphFilter(labels=wanted, others_per_label=2, seed=1))
    reseeded = select_glyphs(path, GlyphFilter(labels=wanted, others_per_label=2, seed=2))
    assert again.glyphs == sel.glyphs and reseeded.glyphs != sel.glyphs
    with pytest.raises(GlyphTrainError, match="--others-per-label needs --labels"):
        GlyphFilter(others_per_label=2)


def test_limit_is_a_deterministic_seeded_sample(dirty_db):
    path, _ = dirty_db
    full = {g.glyph_id for g in select_glyphs(path).glyphs}
    a = [g.glyph_id for g in select_glyphs(path, GlyphFilter(limit=100, seed=1)).glyphs]
    b = [g.glyph_id for g in select_glyphs(path, GlyphFilter(limit=100, seed=1)).glyphs]
    c = [g.glyph_id for g in select_glyphs(path, GlyphFilter(limit=100, seed=2)).glyphs]
    assert a == b and len(a) == 100 and set(a) <= full and a == sorted(a)
    assert a != c
    # Not just the first rows: the sample spreads over the whole table.
    assert max(a) > sorted(full)[len(full) // 2]
    sel = select_glyphs(path, GlyphFilter(limit=10_000))
    assert sel.stats.limit_dropped == 0 and len(sel.glyphs) == len(full)


def test_min_count_applies_after_the_limit_sample(dirty_db):
    path, _ = dirty_db
    sampled = select_glyphs(path, GlyphFilter(limit=150, seed=3))
    counts = Counter(g.label for g in sampled.glyphs)
    both = select_glyphs(path, GlyphFilter(limit=150, seed=3, drop_singletons=True))
    assert [g.glyph_id for g in both.glyphs] == [g.glyph_id for g in sampled.glyphs if counts[g.label] >= 2]
    assert both.stats.min_count_dropped == sum(n for n in counts.values() if n < 2) > 0
    assert both.stats.min_count_labels == sum(1 for n in counts.values() if n < 2)
    assert min(both.label_counts.values()) >= 2
    three = select_glyphs(path, GlyphFilter(min_label_count=3))
    assert min(Counter(g.label for g in three.glyphs).values()) >= 3


def test_content_hash_follows_contours(dirty_db, tmp_path):
    path, _ = dirty_db
    h1 = select_glyphs(path, hash_content=True).content_hash
    assert h1 == select_glyphs(path, hash_content=True).content_hash
    copy = tmp_path / "copy.db"
    shutil.copy(path, copy)
    conn = sqlite3.connect(copy)
    gid = conn.execute("SELECT glyph_id FROM glyphs WHERE label = '65_isol' LIMIT 1").fetchone()[0]
    conn.execute("UPDATE glyphs SET contours = '[[[\"moveTo\",[0,0]],[\"lineTo\",[5,5]]]]' WHERE glyph_id = ?",
                 (gid,))
    conn.commit()
    conn.close()
    assert select_glyphs(copy, hash_content=True).content_hash != h1


def test_fetch_contours_in_chunks(dirty_db):
    path, _ = dirty_db
    ids = [g.glyph_id for g in select_glyphs(path).glyphs]
    assert len(ids) > 512  # more than one fetch chunk
    conn = open_readonly(path)
    got = fetch_contours(conn, ids + [-1])
    direct = dict(conn.execute("SELECT glyph_id, contours FROM glyphs"))
    conn.close()
    assert set(got) == set(ids) and all(got[i] == direct[i] for i in ids)
    assert [gid for gid, _ in iter_contours(path, ids[::-1])] == ids[::-1]


def test_filter_arguments_validate():
    with pytest.raises(GlyphTrainError):
        GlyphFilter(limit=0)
    with pytest.raises(GlyphTrainError):
        GlyphFilter(min_label_count=0)
