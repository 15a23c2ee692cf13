"""label-font's look-alike prior (inference/look_alike_prior.py): O and 0, I l 1 |, C and c told apart by how
their glyphs compare in size within the font."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
from fontfactory import fontpkg_file

from glyph_train.inference.look_alike_prior import (LOOK_ALIKES, ComparisonTable, adapt_to_look_alikes,
                                                    comparison, comparison_table, fit_table, ink_box, swapped)
from glyph_train.inference.sources import default_face, face_glyphs

REPO = Path(__file__).resolve().parents[1]
O, ZERO, LOWER_O, CAP_I, LOWER_L, ONE = "79_isol", "48_isol", "111_isol", "73_isol", "108_isol", "49_isol"


def share(table: ComparisonTable, a: str, b: str, size: int, digit: int) -> float:
    """Of the fonts drawing a and b, the share whose a compares with b as `digit` (0 larger, 2 smaller) in
    `size` (0 width, 1 top, 2 bottom)."""
    counts = table.counts[a, b]
    digits = np.arange(27) // (9, 3, 1)[size] % 3
    return counts[digits == digit].sum() / counts.sum()


def test_the_shipped_table_counts_the_training_fonts_regularities():
    table = comparison_table()
    assert {pair for labels in LOOK_ALIKES for pair in zip(labels, labels[1:])} <= set(table.counts)
    assert table.counts[O, ZERO].sum() > 1000
    assert share(table, O, ZERO, 0, 0) > 0.9  # O wider than 0
    assert share(table, CAP_I, LOWER_L, 1, 2) > 0.8  # I lower than l
    assert share(table, "67_isol", "99_isol", 1, 0) > 0.95  # C taller than c


def test_a_pair_read_the_other_way_round_is_the_same_evidence():
    table = comparison_table()
    cells = np.arange(27)
    np.testing.assert_allclose(table.ratio(ZERO, O), table.ratio(O, ZERO)[swapped(cells)])
    assert table.ratio(O, "65_isol") is None
    # glyphs of the same size say nothing either way
    assert table.ratio(O, ZERO)[13] == 1.0 and comparison(np.zeros(3), np.zeros(3), 0.01) == 13


def test_fit_table_counts_how_each_fonts_pair_compares():
    wide, narrow, tall = np.array([0.7, 0.7, 0.0]), np.array([0.5, 0.7, 0.0]), np.array([0.5, 0.75, 0.0])
    fonts = [{O: wide, ZERO: narrow}, {O: wide, ZERO: narrow}, {O: narrow, ZERO: wide}, {O: narrow, ZERO: tall},
             {O: wide}]
    counts = fit_table(fonts, 0.01).counts[O, ZERO]
    assert counts.sum() == 4  # the last font has no 0
    assert counts[0 * 9 + 1 * 3 + 1] == 2 and counts[2 * 9 + 1 * 3 + 1] == 1 and counts[1 * 9 + 2 * 3 + 1] == 1


def _real_font(package: str, name: str) -> tuple[list[str], list[np.ndarray]]:
    """A real font's labelled glyphs: labels and ink boxes, as label-font reads them."""
    records, _ = face_glyphs(default_face(fontpkg_file(package, name)))
    records = [r for r in records if r.label]
    return [r.label for r in records], [ink_box(r.contours, r.em.upem) for r in records]


def test_a_fonts_O_and_0_the_model_swapped_are_told_apart_by_their_widths():
    """Lora's O and 0, I and l as a model unsure of its style might read them (each a shade likelier the other's
    label): the prior, from the glyphs' real ink boxes, gives each its own, keeps each glyph's total on its
    set and leaves every other label alone."""
    labels, boxes = _real_font("fontpkg_lora", "Lora[wght].ttf")
    names = sorted(set(labels))
    probs = np.full((len(labels), len(names)), 1e-4)
    for row, label in enumerate(labels):
        probs[row, names.index(label)] = 1.0
    swaps = {O: ZERO, ZERO: O, CAP_I: LOWER_L, LOWER_L: CAP_I}
    for row, label in enumerate(labels):
        if label in swaps:
            probs[row, names.index(label)], probs[row, names.index(swaps[label])] = 0.4, 0.5
    probs /= probs.sum(axis=1, keepdims=True)
    adapted = adapt_to_look_alikes(probs, names, lambda row: boxes[row], comparison_table())
    swapped_rows = [row for row, label in enumerate(labels) if label in swaps]
    assert len(swapped_rows) == 4
    assert all(names[probs[r].argmax()] == swaps[labels[r]] for r in swapped_rows)
    assert all(names[adapted[r].argmax()] == labels[r] for r in swapped_rows)
    in_sets = np.isin(names, [a for s in LOOK_ALIKES for a in s])
    np.testing.assert_allclose(adapted[:, ~in_sets], probs[:, ~in_sets], rtol=1e-12)
    for labels_of_set in LOOK_ALIKES:
        cols = np.isin(names, labels_of_set)
        np.testing.assert_allclose(adapted[:, cols].sum(axis=1), probs[:, cols].sum(axis=1), rtol=1e-9)


def test_glyphs_of_one_size_or_with_no_partner_keep_their_probabilities():
    names = [O, ZERO, "65_isol"]
    probs = np.array([[0.4, 0.5, 0.1], [0.45, 0.45, 0.1], [0.0, 0.0, 1.0]])
    same = adapt_to_look_alikes(probs, names, lambda row: np.array([0.6, 0.7, 0.0]), comparison_table())
    np.testing.assert_allclose(same, probs, rtol=1e-12)
    alone = adapt_to_look_alikes(probs[:1], names, lambda row: np.array([0.6, 0.7, 0.0]), comparison_table())
    np.testing.assert_allclose(alone, probs[:1], rtol=1e-12)


def test_a_font_with_many_glyphs_like_a_set_compares_only_its_likeliest():
    """A big font whose every glyph has some O or 0 in its probabilities: only the MAX_GLYPHS likeliest are
    compared (their comparisons grow with the square), the rest keep their probabilities."""
    from glyph_train.inference.look_alike_prior import MAX_GLYPHS

    rng = np.random.default_rng(0)
    names = [O, ZERO, "65_isol"]
    probs = rng.dirichlet([1.0, 1.0, 8.0], size=3 * MAX_GLYPHS)
    sizes = rng.uniform(0.3, 0.8, (len(probs), 3))
    adapted = adapt_to_look_alikes(probs, names, lambda row: sizes[row], comparison_table())
    likeliest = np.argsort(-probs[:, :2].sum(axis=1), kind="stable")[:MAX_GLYPHS]
    moved = np.flatnonzero(~np.isclose(adapted, probs, rtol=1e-12).all(axis=1))
    assert len(moved) > MAX_GLYPHS // 2 and set(moved) <= set(likeliest)


def test_fit_look_alikes_reads_a_db_without_touching_it_and_leaves_out_held_out_families(tmp_path):
    """The table's writer on a glyphs.db: one count per training font and pair; the held-out families (here
    Barlow) are not counted, and the DB is byte-identical afterwards."""
    db = tmp_path / "glyphs.db"
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE fonts (file_hash TEXT PRIMARY KEY, file_name TEXT, family_name TEXT, style_name TEXT,
            upem INTEGER, ascent INTEGER, descent INTEGER, line_gap INTEGER, typo_ascent INTEGER,
            typo_descent INTEGER, x_height INTEGER, cap_height INTEGER, excluded INTEGER DEFAULT 0);
        CREATE TABLE glyphs (glyph_id INTEGER UNIQUE, f_id TEXT, label TEXT, contours TEXT, joining_group TEXT,
            char_class TEXT);""")
    records, _ = face_glyphs(default_face(fontpkg_file("fontpkg_lora", "Lora[wght].ttf")))
    wanted = [r for r in records if r.label in (O, ZERO, CAP_I, LOWER_L)]
    gid = 0
    for font, family in (("a", "Lora"), ("b", "Lora Two"), ("c", "Barlow")):
        conn.execute("INSERT INTO fonts VALUES (?, ?, ?, 'Regular', 1000, 800, -200, 0, 800, -200, 500, 700, 0)",
                     (font, f"{font}.ttf", family))
        for r in wanted:
            gid += 1
            conn.execute("INSERT INTO glyphs VALUES (?, ?, ?, ?, 'NO_JOIN', 'latin')", (gid, font, r.label, r.contours))
    conn.commit()
    conn.close()
    before = db.read_bytes()
    out = tmp_path / "table.json"
    proc = subprocess.run([sys.executable, "bench/fit_look_alikes.py", "--db", str(db), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 fonts" in proc.stdout and db.read_bytes() == before
    table = ComparisonTable.from_json(json.loads(out.read_text()))
    assert table.counts[O, ZERO].sum() == 2 and table.counts[CAP_I, LOWER_L].sum() == 2
    assert table.counts[CAP_I, ONE].sum() == 0  # a pair the fonts do not both draw
    assert share(table, O, ZERO, 0, 0) == 1.0  # Lora's O is wider than its 0
