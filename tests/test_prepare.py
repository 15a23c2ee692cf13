"""prepare.py + splits.py: cache contents and alignment, splits, fingerprint/caching, images_view, bad input."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest

from dbfactory import SCHEMA, write_db, write_db_without, write_empty_db
from glyph_train.cache.prepare import fingerprint_of, prepare
from glyph_train.cache.raster import RenderParams, render
from glyph_train.cache.reader import images_view, load_prepared
from glyph_train.cache.splits import split_glyphs
from glyph_train.cli import main
from glyph_train.corpus.db import GlyphFilter, GlyphMeta, fetch_contours, open_readonly, select_glyphs
from glyph_train.corpus.font_rows import EmBox, family_key
from glyph_train.errors import GlyphTrainError


def file_state(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("db") / "glyphs.db"
    info = write_db(path, bad_rows=True, exclude_font=True, shaped=True, orphan_rows=True)
    return path, info


@pytest.fixture(scope="module")
def prepared(db, tmp_path_factory):
    path, _ = db
    before = file_state(path)
    out = tmp_path_factory.mktemp("cache") / "cache"
    data = prepare(path, out, RenderParams(img_size=64), "font", 0.2, 0, 1, GlyphFilter())
    assert file_state(path) == before  # the user's DB is byte-identical, mtime included
    return data


# ---------------------------------------------------------------------------------------------- splits


def _meta(gid: int, family: str, label: str) -> GlyphMeta:
    return GlyphMeta(gid, f"hash-{family}", family, label, "NO_JOIN", "latin", EmBox(1000, 800, -200))


def test_family_key_groups_weights_and_styles():
    assert family_key("Roboto Light Italic") == family_key("Roboto") == family_key("Roboto-Bold") == "roboto"
    assert family_key("Noto Sans Arabic") == "noto sans arabic"
    assert family_key("Bold") == "bold"  # never strips to nothing


def test_font_split_is_family_disjoint_and_deterministic(db):
    sel = select_glyphs(db[0])
    a = split_glyphs(sel.glyphs, "font", 0.25, seed=0)
    assert a.train and a.validation
    train_fam = {family_key(sel.glyphs[i].family) for i in a.train}
    val_fam = {family_key(sel.glyphs[i].family) for i in a.validation}
    assert not train_fam & val_fam
    assert {sel.glyphs[i].label for i in a.validation} <= {sel.glyphs[i].label for i in a.train}
    assert a == split_glyphs(sel.glyphs, "font", 0.25, seed=0)
    seeds = {tuple(split_glyphs(sel.glyphs, "font", 0.25, seed=s).val_families) for s in range(6)}
    assert len(seeds) > 1


def test_font_split_keeps_weights_of_a_family_together():
    glyphs = [_meta(i, fam, f"{i % 5}_isol") for i, fam in enumerate(
        ["Roboto", "Roboto Light", "Roboto Bold Italic", "Lora", "Lora Bold", "Inter", "Amiri", "Cairo"] * 20)]
    for seed in range(5):
        r = split_glyphs(glyphs, "font", 0.3, seed)
        sides = {}
        for side, idx in (("t", r.train), ("v", r.validation)):
            for i in idx:
                sides.setdefault(family_key(glyphs[i].family), set()).add(side)
        assert all(len(s) == 1 for s in sides.values()), sides


def test_font_split_drops_and_counts_labels_unseen_in_train():
    glyphs = [_meta(1, "A", "x"), _meta(2, "A", "y"), _meta(3, "B", "x"), _meta(4, "B", "z"), _meta(5, "B", "z")]
    for seed in range(10):
        r = split_glyphs(glyphs, "font", 0.5, seed)
        if r.val_families == ["b"]:
            assert [glyphs[i].label for i in r.validation] == ["x"]
            assert (r.dropped_val_rows, r.dropped_val_labels) == (2, 1)
            break
    else:
        pytest.fail("no seed held out family B")


def test_font_split_needs_two_families():
    with pytest.raises(GlyphTrainError, match="stratified"):
        split_glyphs([_meta(i, "Roboto", "a") for i in range(4)], "font", 0.2, 0)


def test_stratified_split_keeps_every_label_in_train(db):
    sel = select_glyphs(db[0])
    r = split_glyphs(sel.glyphs, "stratified", 0.3, seed=4)
    train = Counter(sel.glyphs[i].label for i in r.train)
    val = Counter(sel.glyphs[i].label for i in r.validation)
    assert set(train) == {g.label for g in sel.glyphs}
    assert r.dropped_val_rows == 0 and 0.2 < len(r.validation) / len(sel.glyphs) < 0.4
    assert set(val) <= set(train)
    assert r == split_glyphs(sel.glyphs, "stratified", 0.3, seed=4)
    assert r != split_glyphs(sel.glyphs, "stratified", 0.3, seed=5)


# ---------------------------------------------------------------------------------------------- cache


def test_cache_layout_and_label_index(prepared, db):
    out = prepared.path
    labels = json.loads((out / "labels.json").read_text())
    names = [e["name"] for e in labels["labels"]]
    assert names == sorted(names) == prepared.label_names
    assert [e["index"] for e in labels["labels"]] == list(range(len(names)))
    dsd = datasets.load_from_disk(str(out))
    assert set(dsd) == {"train", "validation"}
    cols = {"image", "label", "label_name", "glyph_id", "font", "family", "char_class", "joining_group"}
    assert cols <= set(dsd["train"].column_names)
    counts = Counter()
    for split in ("train", "validation"):
        ds = dsd[split]
        lab, name = ds["label"], ds["label_name"]
        assert all(prepared.label_names[a] == b for a, b in zip(lab, name))
        counts.update(name)
        ids = list(ds["glyph_id"])
        assert ids == sorted(ids)
    assert {e["name"]: e["count"] for e in labels["labels"]} == {n: counts.get(n, 0) for n in names}
    # family-disjoint on disk too, and validation labels all known to the classifier
    tr, va = dsd["train"], dsd["validation"]
    assert len(va) and not {family_key(f) for f in tr["family"]} & {family_key(f) for f in va["family"]}
    assert set(va["label_name"]) <= set(tr["label_name"])
    info = json.loads((out / "prepare.json").read_text())
    _, dbinfo = db
    assert info["render_skips"]["render_failed"] == dbinfo.render_bad
    assert info["selection"]["null_contours"] == dbinfo.bad["null_contours"]
    assert len(tr) + len(va) + info["split_report"]["dropped_val_rows"] == dbinfo.good - dbinfo.render_bad


def test_cached_images_are_the_rendered_rows(prepared, db):
    """Re-render rows straight from the DB and compare pixel for pixel: labels and images stay aligned."""
    path, _ = db
    sel = {g.glyph_id: g for g in select_glyphs(path).glyphs}
    conn = open_readonly(path)
    params = RenderParams(img_size=64)
    for ds in (prepared.train, prepared.validation):
        view = images_view(ds)
        picks = np.random.default_rng(0).choice(len(ds), size=min(15, len(ds)), replace=False)
        rows = ds.select(sorted(picks.tolist()))
        texts = fetch_contours(conn, rows["glyph_id"])
        for k, row in zip(sorted(picks.tolist()), rows):
            g = sel[row["glyph_id"]]
            assert (row["label_name"], row["family"], row["char_class"]) == (g.label, g.family, g.char_class)
            expected = render(texts[g.glyph_id], params, g.em)
            assert np.array_equal(np.asarray(row["image"], dtype=np.uint8), expected)
            assert np.array_equal(view[k], expected)
    conn.close()


def test_images_view_is_zero_copy_and_matches_rows(prepared):
    ds = prepared.train
    view = images_view(ds)
    assert view.shape == (len(ds), 64, 64) and view.dtype == np.uint8
    assert not view[0].flags.owndata and not view[0].flags.writeable  # a view over the Arrow buffer
    expected = np.stack([np.asarray(r, dtype=np.uint8) for r in ds["image"]])
    assert np.array_equal(np.asarray(view), expected)
    idx = np.random.default_rng(1).permutation(len(ds))[:40]
    assert np.array_equal(view[idx], expected[idx])
    assert np.array_equal(view[-1], expected[-1])
    assert np.array_equal(view[3:17], expected[3:17])
    assert np.array_equal(view[expected.sum(axis=(1, 2)) > 10**5], expected[expected.sum(axis=(1, 2)) > 10**5])
    assert np.array_equal(pickle.loads(pickle.dumps(view))[idx], expected[idx])
    with pytest.raises(IndexError):
        view[len(ds)]


def test_images_view_handles_chunks_offsets_and_index_maps(prepared):
    base = prepared.train
    n = len(base)
    # contiguous selects slice the table (chunk offsets); concatenating them gives several chunks
    multi = datasets.concatenate_datasets([base.select(range(5, 40)), base.select(range(40, n)),
                                           base.select(range(0, 5))])
    shuffled = base.shuffle(seed=3)  # an indices mapping over the table
    picked = base.select([7, 2, 2, 30])
    for ds in (multi, shuffled, picked, base.select(range(11, n - 3))):
        view = images_view(ds)
        assert len(view) == len(ds)
        expected = np.stack([np.asarray(ds[i]["image"], dtype=np.uint8) for i in range(len(ds))])
        assert all(np.array_equal(view[i], expected[i]) for i in range(len(ds)))
        idx = np.random.default_rng(2).integers(0, len(ds), size=25)
        assert np.array_equal(view[idx], expected[idx])
        assert np.array_equal(view[2:len(ds) - 1:3], expected[2:len(ds) - 1:3])
    assert len(images_view(multi).chunks) >= 3


def test_cache_hit_and_fingerprint_changes(prepared, db, tmp_path, capsys):
    path, _ = db
    out = prepared.path
    stamp = (out / "prepare.json").stat().st_mtime_ns
    again = prepare(path, out, RenderParams(img_size=64), "font", 0.2, 0, 1, GlyphFilter())
    assert again.cache_hit and "cache hit" in capsys.readouterr().out
    assert (out / "prepare.json").stat().st_mtime_ns == stamp
    assert again.fingerprint == prepared.fingerprint

    sel = select_glyphs(path, GlyphFilter(), hash_content=True)
    base = (RenderParams(img_size=64), "font", 0.2, 0, GlyphFilter())
    fp = fingerprint_of(sel, *base)
    assert fp == prepared.fingerprint
    variants = [
        (RenderParams(img_size=32), "font", 0.2, 0, GlyphFilter()),
        (RenderParams(img_size=64, fit="em"), "font", 0.2, 0, GlyphFilter()),
        (RenderParams(img_size=64, margin=0.1), "font", 0.2, 0, GlyphFilter()),
        (RenderParams(img_size=64), "stratified", 0.2, 0, GlyphFilter()),
        (RenderParams(img_size=64), "font", 0.3, 0, GlyphFilter()),
        (RenderParams(img_size=64), "font", 0.2, 1, GlyphFilter()),
    ] + [(RenderParams(img_size=64), "font", 0.2, 0, f) for f in (
        GlyphFilter(limit=50), GlyphFilter(seed=1), GlyphFilter(exclude_shaped=True), GlyphFilter(min_label_count=2),
        GlyphFilter(drop_singletons=True), GlyphFilter(char_classes=("latin",)), GlyphFilter(labels=("65_isol",)))]
    fps = {fingerprint_of(sel, *v) for v in variants}
    assert len(fps) == len(variants) and fp not in fps
    import glyph_train.cache.prepare as prepare_mod  # a changed split algorithm must not reuse old splits

    old_version = prepare_mod.SPLIT_VERSION
    try:
        prepare_mod.SPLIT_VERSION = old_version + 1
        assert fingerprint_of(sel, *base) != fp
    finally:
        prepare_mod.SPLIT_VERSION = old_version

    # A changed DB (one contour edited) is a miss, and the cache is rebuilt from it.
    copy = tmp_path / "changed.db"
    shutil.copy(path, copy)
    conn = sqlite3.connect(copy)
    conn.execute("UPDATE glyphs SET contours = ? WHERE label = '65_isol' AND glyph_id = "
                 "(SELECT MIN(glyph_id) FROM glyphs WHERE label = '65_isol')",
                 ('[[["moveTo",[0,0]],["lineTo",[500,0]],["lineTo",[250,700]],["closePath",null]]]',))
    conn.commit()
    conn.close()
    out2 = tmp_path / "c2"
    shutil.copytree(out, out2)
    rebuilt = prepare(copy, out2, RenderParams(img_size=64), "font", 0.2, 0, 1, GlyphFilter())
    assert not rebuilt.cache_hit and rebuilt.fingerprint != prepared.fingerprint
    assert "cache hit" not in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".c2.")]  # no temp dirs left behind


def test_parallel_render_gives_the_same_cache(prepared, db, tmp_path):
    par = prepare(db[0], tmp_path / "par", RenderParams(img_size=64), "font", 0.2, 0, 2, GlyphFilter())
    assert par.fingerprint == prepared.fingerprint
    for a, b in ((par.train, prepared.train), (par.validation, prepared.validation)):
        assert list(a["glyph_id"]) == list(b["glyph_id"])
        assert np.array_equal(np.asarray(images_view(a)), np.asarray(images_view(b)))


def test_filters_and_stratified_split_end_to_end(db, tmp_path):
    path, _ = db
    flt = GlyphFilter(limit=200, seed=5, exclude_shaped=True, drop_singletons=True)
    data = prepare(path, tmp_path / "c", RenderParams(img_size=32, fit="em"), "stratified", 0.25, 5, 1, flt)
    sel = select_glyphs(path, flt)
    info = data.info
    n = len(data.train) + len(data.validation)
    assert n + info["render_skips"]["render_failed"] + info["split_report"]["dropped_val_rows"] == len(sel.glyphs)
    assert set(data.train["glyph_id"]) | set(data.validation["glyph_id"]) <= {g.glyph_id for g in sel.glyphs}
    assert not any(lab.endswith("_shaped") for lab in data.label_names)
    assert set(data.validation["label_name"]) <= set(data.train["label_name"])
    assert json.loads((tmp_path / "c" / "prepare.json").read_text())["params"]["fit"] == "em"


def test_refuses_to_replace_a_directory_that_is_not_a_cache(db, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(GlyphTrainError, match="not a glyph-train cache"):
        prepare(db[0], out, RenderParams(img_size=32), "font", 0.2, 0, 1, GlyphFilter())
    assert (out / "thesis.tex").read_text() == "precious"
    with pytest.raises(GlyphTrainError, match="not a prepared cache"):
        load_prepared(out)


# ---------------------------------------------------------------------------------------------- CLI / bad input


def test_cli_prepare_writes_a_cache_and_leaves_the_db_untouched(db, tmp_path, capsys):
    path, _ = db
    before = file_state(path)
    rc = main(["prepare", "--db", str(path), "--out", str(tmp_path / "c"), "--img-size", "32", "--val-frac", "0.2",
               "--num-proc", "1", "--char-classes", "latin,digit", "--exclude-shaped"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "selected" in out and "train" in out and "validation" in out
    assert file_state(path) == before
    assert not list(path.parent.glob("*-wal")) and not list(path.parent.glob("*-shm"))
    data = load_prepared(tmp_path / "c")
    assert set(data.train["char_class"]) <= {"latin", "digit"}


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    not_sqlite = tmp_path / "fonts.db"
    not_sqlite.write_text("hello")
    garbage = tmp_path / "garbage.db"
    conn = sqlite3.connect(garbage)
    conn.executescript(SCHEMA)
    conn.execute("INSERT INTO fonts (file_hash, family_name) VALUES ('h', 'F')")
    conn.executemany("INSERT INTO glyphs VALUES (?, 'h', '65_isol', ?, 'NO_JOIN', 'latin')",
                     [(1, None), (2, "{{{"), (3, "[]")])
    conn.commit()
    conn.close()
    cases = {
        tmp_path / "nope.db": "no such file",
        not_sqlite: "not a SQLite database",
        write_empty_db(tmp_path / "empty.db"): "glyphs table is empty",
        write_db_without(tmp_path / "cols.db", "glyphs", ("contours",)): "lacks column(s) contours",
        garbage: "no glyphs left",
    }
    for path, expected in cases.items():
        rc = main(["prepare", "--db", str(path), "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and expected in err and len(err.splitlines()) == 1, err
        assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert main(["prepare", "--db", str(garbage), "--out", str(tmp_path / "o"), "--limit", "0"]) == 2


def test_empty_validation_and_stale_temp_dirs(db, tmp_path):
    stale = tmp_path / ".c.tmp-999999999"  # left by a killed prepare whose process is gone
    (stale / "train").mkdir(parents=True)
    data = prepare(db[0], tmp_path / "c", RenderParams(img_size=16), "stratified", 0.0, 0, 1, GlyphFilter())
    assert len(data.validation) == 0 and len(data.train) > 0
    assert images_view(data.validation).shape == (0, 16, 16)
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
