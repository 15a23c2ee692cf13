"""embed / search / label-font end to end: a tiny model trained once (test_vit, 32 px, em fit) on a tiny DB of
real outlines, applied to small subsets of real fontpkg fonts, one of them stripped of cmap and GSUB with
every glyph renamed glyphNNNNN. Real FAISS, real Parquet, real HarfBuzz, a real 2-process gloo launch."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import uharfbuzz as hb
from fontTools.ttLib import TTFont
from fontfactory import fontpkg_file, strip_font, subset_font
from PIL import Image

from glyph_train.cli import main

REPO = Path(__file__).resolve().parents[1]
ARABIC = "".join(chr(c) for c in (0x0628, 0x062A, 0x062D, 0x0633, 0x0639, 0x0644, 0x0645, 0x0647, 0x064A, 0x0627,
                                  0x062F, 0x0631, 0x0648))
LATIN = "ABCDEabcde0123"
WORDS = ["بحث", "سمع", "تبدو", "يلعب", "هبة", "لم", "مال", "عمر", "حب", "بيت"]


def env() -> dict[str, str]:
    e = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    e.pop("GLYPH_TRAIN_NUM_PROCESSES", None)
    return e


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digest(path: Path) -> dict[str, str]:
    return {p.name: digest(p) for p in sorted(path.iterdir())}


def cli(*argv: str) -> tuple[int, str]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main([str(a) for a in argv])
    return rc, buf.getvalue()


# ---------------------------------------------------------------------------------------------- export


def test_export_stores_a_fitted_temperature_and_old_exports_read_as_one(work):
    from glyph_train.evaluation.calibration import export_temperature, fit_temperature

    config = json.loads((work["export"] / "config.json").read_text())
    assert 0.01 < config["temperature"] < 100
    assert export_temperature({}) == 1.0 and export_temperature({"temperature": None}) == 1.0
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, 4000)
    true_logits = rng.normal(size=(4000, 8)) + 3.0 * np.eye(8)[labels]
    # samples drawn from softmax(true_logits): logits scaled by 4 are overconfident by exactly T = 4
    drawn = np.array([rng.choice(8, p=np.exp(z) / np.exp(z).sum()) for z in true_logits])
    assert fit_temperature(4.0 * true_logits, drawn) == pytest.approx(4.0, rel=0.1)


def test_the_other_class_probability_is_divided_by_its_training_prior(work, tmp_path):
    """An export with an other class (--others-per-label) and other_prior_ratio r: the Predictor's P(other)
    is the model's divided by r, rows renormalised, every other ratio between labels unchanged."""
    import shutil

    from glyph_train.inference.predictor import Predictor

    export = tmp_path / "export"
    shutil.copytree(work["export"], export)
    names = json.loads((export / "labels.json").read_text())
    plain = Predictor(export)
    size = plain.params.img_size
    images = np.random.default_rng(0).integers(0, 256, (6, size, size) if plain.params.channels == 1
                                               else (6, plain.params.channels, size, size), dtype=np.uint8)
    before = plain.predict(images).probs
    names[-1] = "<other>"  # the last class plays the other class
    (export / "labels.json").write_text(json.dumps(names))
    config = json.loads((export / "config.json").read_text())
    (export / "config.json").write_text(json.dumps({**config, "other_prior_ratio": 40.0}))
    after = Predictor(export).predict(images).probs
    expected = before.copy()
    expected[:, -1] /= 40.0
    np.testing.assert_allclose(after, expected / expected.sum(axis=1, keepdims=True), rtol=1e-6)


# ---------------------------------------------------------------------------------------------- embed


def test_embed_fonts_writes_index_with_metadata_and_dedupes_outlines(work, index):
    from glyph_train.inference.index import COLUMNS, load_index

    gi = load_index(index)
    table = gi.table.to_pylist()
    assert set(gi.table.column_names) == set(COLUMNS)
    files = {Path(r["font_file"]).name for r in table}
    assert files == {"Amiri-sub.ttf", "Abril-sub.ttf"}
    # every glyph but .notdef, whether or not the cmap maps it (Amiri's positional forms are unmapped)
    amiri = TTFont(work["amiri"])
    drawn = [r for r in table if r["font_file"].endswith("Amiri-sub.ttf")]
    assert len(drawn) <= len(amiri.getGlyphOrder()) - 1 and len(drawn) > len(amiri.getBestCmap())
    by_name = {r["glyph"]: r for r in drawn}
    assert by_name["A"]["label"] == "65_isol"
    assert any(r["label"] == "1576_init" for r in drawn) and any(r["label"] == "1576_fina" for r in drawn)
    assert all(0.0 <= r["confidence"] <= 1.0 and r["predicted_label"] for r in table)
    # one vector per distinct outline (and em box): identical outlines share it
    keys = {(r["outline_hash"], r["upem"], r["ascent"], r["descent"]) for r in table}
    assert gi.index.ntotal == len(keys) < len(table) or gi.index.ntotal == len(keys) == len(table)
    vec_of = {}
    for r in table:
        assert vec_of.setdefault((r["outline_hash"], r["upem"], r["ascent"], r["descent"]), r["vector"]) == r["vector"]
    info = json.loads((index / "index.json").read_text())
    assert info["factory"] == "Flat" and info["img_size"] == 32 and info["fit"] == "em"
    assert not [p for p in index.parent.iterdir() if p.name.startswith(".index.")], "temporary files left behind"


def test_append_adds_only_new_fonts_and_is_idempotent(work, index, tmp_path):
    import shutil

    from glyph_train.inference.index import load_index

    copy = tmp_path / "index"
    shutil.copytree(index, copy)
    before = tree_digest(copy)
    rc, out = cli("embed", "--checkpoint", work["export"], work["fonts"], "--out", copy, "--append")
    assert rc == 0 and "nothing new" in out
    assert tree_digest(copy) == before
    old = load_index(copy)
    rc, _ = cli("embed", "--checkpoint", work["export"], work["fonts"], work["extra"], "--out", copy, "--append")
    assert rc == 0
    new = load_index(copy)
    assert new.table.slice(0, len(old.table)).to_pylist() == old.table.to_pylist()
    added = new.table.slice(len(old.table)).to_pylist()
    assert added and {Path(r["font_file"]).name for r in added} == {"Bebas-sub.ttf"}
    np.testing.assert_array_equal(new.vectors(np.arange(old.index.ntotal)), old.vectors(np.arange(old.index.ntotal)))
    before = tree_digest(copy)
    rc, _ = cli("embed", "--checkpoint", work["export"], work["fonts"], work["extra"], "--out", copy, "--append")
    assert rc == 0 and tree_digest(copy) == before


def test_embed_bf16_writes_an_index_of_close_vectors_that_appends_and_searches_in_bf16_only(work, index, tmp_path,
                                                                                         capsys):
    from glyph_train.inference.index import load_index
    from glyph_train.inference.search import _predictor

    out = tmp_path / "bf16"
    rc, _ = cli("embed", "--checkpoint", work["export"], work["fonts"], "--out", out, "--bf16")
    assert rc == 0
    fp32, bf16 = load_index(index), load_index(out)
    assert bf16.info["bf16"] is True and fp32.info["bf16"] is False
    rows = np.arange(fp32.index.ntotal)
    difference = np.abs(bf16.vectors(rows) - fp32.vectors(rows)).max()
    assert 0 < difference < 0.05, difference  # bf16 rounds: different, and close
    assert _predictor(bf16, None).bf16 and not _predictor(fp32, None).bf16  # queries embedded as the index was
    before = tree_digest(out)
    rc = main(["embed", "--checkpoint", str(work["export"]), str(work["extra"]), "--out", str(out), "--append"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "with --bf16" in err and len(err.splitlines()) == 1 and tree_digest(out) == before
    rc, _ = cli("embed", "--checkpoint", work["export"], work["extra"], "--out", out, "--append", "--bf16")
    assert rc == 0 and load_index(out).index.ntotal > bf16.index.ntotal


def test_embed_from_db_leaves_it_untouched_and_hnsw_factory(work, tmp_path):
    from glyph_train.inference.index import load_index

    db = work["db"]
    state = (digest(db), db.stat().st_mtime_ns)
    rc, _ = cli("embed", "--checkpoint", work["export"], "--db", db, "--out", tmp_path / "idx", "--index-factory", "HNSW16")
    assert rc == 0 and (digest(db), db.stat().st_mtime_ns) == state
    gi = load_index(tmp_path / "idx")
    rows = gi.table.to_pylist()
    assert all(r["source"] == "db" and r["label"] and r["db"] == str(db) for r in rows)
    assert gi.info["factory"] == "HNSW16" and "HNSW" in type(gi.index).__name__
    rc, out = cli("search", "--index", tmp_path / "idx", "--char", "A", "--json", "-k", "3")
    assert rc == 0 and len(json.loads(out)["results"]) == 3


def test_embed_refuses_bad_factory_and_foreign_directory(work, tmp_path, capsys):
    assert main(["embed", "--checkpoint", str(work["export"]), str(work["latin"]), "--out", str(tmp_path / "a"),
                 "--index-factory", "NoSuchIndex"]) == 2
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main(["embed", "--checkpoint", str(work["export"]), str(work["latin"]), "--out", str(other)]) == 2
    assert (other / "notes.txt").read_text() == "keep me"
    err = capsys.readouterr().err
    assert "NoSuchIndex" in err and "not a glyph-train index" in err and "Traceback" not in err


def test_embed_with_two_processes_equals_one(work, index, tmp_path):
    from glyph_train.inference.index import load_index

    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "accelerate_configs/cpu_multiprocess.yaml"), "-m", "glyph_train.cli", "embed",
           "--checkpoint", str(work["export"]), str(work["fonts"]), "--out", str(tmp_path / "two")]
    res = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    one, two = load_index(index), load_index(tmp_path / "two")
    assert two.table.to_pylist() == one.table.to_pylist()
    ids = np.arange(one.index.ntotal)
    np.testing.assert_allclose(two.vectors(ids), one.vectors(ids), atol=1e-5)


# ---------------------------------------------------------------------------------------------- search


def test_search_char_json_format_and_contact_sheet(work, index, tmp_path):
    sheet = tmp_path / "sheet.png"
    rc, out = cli("search", "--index", index, "--char", "ب", "--form", "init", "--font", "Amiri", "-k", "5",
                  "--json", "--out", sheet)
    assert rc == 0
    result = json.loads(out[: out.rindex("}") + 1])
    assert result["query"]["label"] == "1576_init" and result["query"]["family"] == "Amiri"
    assert [r["rank"] for r in result["results"]] == [1, 2, 3, 4, 5]
    for r in result["results"]:
        assert {"rank", "score", "family", "style", "font", "glyph", "label"} <= set(r)
    scores = [r["score"] for r in result["results"]]
    assert scores == sorted(scores, reverse=True)
    query_glyph = result["query"]["glyph"]
    assert not any(r["glyph"] == query_glyph and r["family"] == "Amiri" for r in result["results"])
    img = Image.open(sheet)
    assert img.width >= 6 * 32 and np.asarray(img.convert("L")).std() > 0


def test_search_by_glyph_and_by_image(work, index, tmp_path):
    rc, out = cli("search", "--index", index, "--glyph", "Abril-sub.ttf:A", "-k", "3", "--json")
    assert rc == 0
    res = json.loads(out)
    assert res["query"]["label"] == "65_isol" and len(res["results"]) == 3
    # a picture of the same glyph, black on white at another size, finds glyphs too
    from glyph_train.cache.raster import RenderParams, render
    from glyph_train.inference.sources import default_face, face_glyphs

    record = next(r for r in face_glyphs(default_face(work["latin"]))[0] if r.glyph == "A")
    png = tmp_path / "A.png"
    Image.fromarray(255 - render(record.contours, RenderParams(img_size=96, fit="tight"))).save(png)
    rc, out = cli("search", "--index", index, "--image", png, "-k", "4", "--json")
    assert rc == 0 and len(json.loads(out)["results"]) == 4
    assert main(["search", "--index", str(index), "--char", "ж"]) == 2  # nothing labelled or predicted so


# ---------------------------------------------------------------------------------------------- label-font


def test_label_font_on_a_stripped_font_writes_csv_and_repaired_font(work, tmp_path):
    stripped = work["stripped"]
    before = digest(stripped)
    out_csv, out_font = tmp_path / "labels.csv", tmp_path / "repaired.ttf"
    rc, _ = cli("label-font", stripped, "--checkpoint", work["export"], "--out", out_csv, "--write-font", out_font,
                "--min-confidence", "0")
    assert rc == 0 and digest(stripped) == before
    rows = list(csv.reader(out_csv.open(encoding="utf-8")))
    assert rows[0] == ["glyph", "label", "confidence", "top5"]
    names = TTFont(stripped).getGlyphOrder()
    assert [r[0] for r in rows[1:]] == [n for n in names[1:]]  # every glyph but .notdef, in glyph id order
    labels = json.loads((work["export"] / "labels.json").read_text())
    assigned = [r[1] for r in rows[1:] if r[1] != "unknown"]
    # joint assignment: a few glyphs per label at most
    from glyph_train.inference.label_font import EXTRA_COPIES

    assert assigned and max(assigned.count(label) for label in assigned) <= 1 + EXTRA_COPIES
    for glyph, label, conf, top5 in rows[1:]:
        assert 0.0 <= float(conf) <= 1.0
        if top5:
            pairs = [p.rsplit(":", 1) for p in top5.split(";")]
            assert len(pairs) == 5 and all(lab in labels for lab, _ in pairs)
            probs = [float(p) for _, p in pairs]
            assert probs == sorted(probs, reverse=True)
    repaired = TTFont(out_font)  # post format 3: fontTools names glyphs from the new cmap, so compare glyph ids
    cmap = {cp: repaired.getGlyphID(name) for cp, name in repaired.getBestCmap().items()}
    isol: dict[int, set] = {}
    stand_in: dict[int, set] = {}  # letters without an isolated glyph map a joined form (repair.STAND_INS)
    for g, lab, *_ in rows[1:]:
        cp, _, form = lab.partition("_")
        if form == "isol":
            isol.setdefault(int(cp), set()).add(names.index(g))
        elif form in ("init", "medi", "fina"):
            stand_in.setdefault(int(cp), set()).add(names.index(g))
    assert set(isol) <= set(cmap) <= set(isol) | set(stand_in)
    assert all(cmap[cp] in isol.get(cp, stand_in.get(cp)) for cp in cmap)
    # a high threshold leaves glyphs unknown
    rc, _ = cli("label-font", stripped, "--checkpoint", work["export"], "--out", tmp_path / "strict.csv",
                "--min-confidence", "1")
    assert rc == 0
    assert {r[1] for r in list(csv.reader((tmp_path / "strict.csv").open()))[1:]} == {"unknown"}


def test_the_repaired_font_maps_labels_below_the_csvs_threshold(work, tmp_path, capsys):
    """A letter the repaired font leaves out shapes as .notdef; a label below 0.5 is still right more often
    than not (BENCHMARKS.md §14l). So --min-confidence thins the CSV, not the font, and says what it mapped."""
    stripped = work["stripped"]
    fonts = {}
    for threshold in ("0", "1"):
        fonts[threshold] = tmp_path / f"repaired{threshold}.ttf"
        capsys.readouterr()
        rc, _ = cli("label-font", stripped, "--checkpoint", work["export"], "--out", tmp_path / f"{threshold}.csv",
                    "--write-font", fonts[threshold], "--min-confidence", threshold)
        assert rc == 0
    assert {r[1] for r in list(csv.reader((tmp_path / "1.csv").open()))[1:]} == {"unknown"}
    cmap = TTFont(fonts["1"]).getBestCmap()
    assert cmap and cmap == TTFont(fonts["0"]).getBestCmap()
    assert "label-font: mapped " in capsys.readouterr().err
    # --font-min-confidence leaves them out; alone it would do nothing, so it is refused
    rc, _ = cli("label-font", stripped, "--checkpoint", work["export"], "--out", tmp_path / "strict.csv",
                "--write-font", tmp_path / "strict.ttf", "--min-confidence", "1", "--font-min-confidence", "1")
    assert rc == 0 and TTFont(tmp_path / "strict.ttf").getBestCmap() == {}
    rc, _ = cli("label-font", stripped, "--checkpoint", work["export"], "--out", tmp_path / "x.csv",
                "--font-min-confidence", "0.5")
    assert rc != 0 and "give --write-font" in capsys.readouterr().err


def test_label_font_reports_the_fonts_scripts_and_no_script_prior_keeps_the_models_probabilities(work, tmp_path):
    from glyph_train.inference.label_font import predict_font, write_csv
    from glyph_train.inference.predictor import Predictor

    rc, out = cli("label-font", work["stripped"], "--checkpoint", work["export"], "--out", tmp_path / "a.csv")
    assert rc == 0 and "label-font: scripts " in out
    rc, out = cli("label-font", work["stripped"], "--checkpoint", work["export"], "--out", tmp_path / "b.csv",
                  "--no-script-prior")
    assert rc == 0 and "label-font: scripts" not in out
    model_only = predict_font(work["stripped"], Predictor(work["export"]), script_prior=False)
    assert model_only.script_shares == {}
    from glyph_train.inference.label_font import assign_font

    write_csv(tmp_path / "expected.csv", assign_font(model_only).glyphs)
    assert (tmp_path / "b.csv").read_text() == (tmp_path / "expected.csv").read_text()


def test_label_font_no_join_prior_keeps_the_forms_as_the_script_prior_left_them(work, tmp_path):
    """The join prior moves probability between an Arabic letter's positional forms only: the Amiri subset's
    glyphs keep their total on the forms and on every other label, and --no-join-prior gives predict_font's
    labels without it."""
    from glyph_train.inference.join_prior import label_forms
    from glyph_train.inference.label_font import assign_font, predict_font, write_csv
    from glyph_train.inference.predictor import Predictor

    predictor = Predictor(work["export"])
    joined, plain = (predict_font(work["stripped"], predictor, join_prior=j) for j in (True, False))
    forms = label_forms(plain.label_names) >= 0
    assert forms.any() and not np.allclose(joined.probs[:, forms], plain.probs[:, forms])
    np.testing.assert_allclose(joined.probs[:, ~forms], plain.probs[:, ~forms], rtol=1e-9)
    np.testing.assert_allclose(joined.probs[:, forms].sum(axis=1), plain.probs[:, forms].sum(axis=1), rtol=1e-9)
    rc, _ = cli("label-font", work["stripped"], "--checkpoint", work["export"], "--out", tmp_path / "a.csv",
                "--no-join-prior")
    write_csv(tmp_path / "expected.csv", assign_font(plain).glyphs)
    assert rc == 0 and (tmp_path / "a.csv").read_text() == (tmp_path / "expected.csv").read_text()


def test_label_font_no_look_alike_prior_keeps_the_look_alikes_as_the_join_prior_left_them(work, tmp_path):
    """The look-alike prior moves probability within each set of look-alikes only (the Amiri subset's Latin O 0
    o, I l 1 ...): every glyph keeps its total on each set and on every other label, and --no-look-alike-prior
    gives predict_font's labels without it."""
    from glyph_train.inference.label_font import assign_font, predict_font, write_csv
    from glyph_train.inference.look_alike_prior import LOOK_ALIKES
    from glyph_train.inference.predictor import Predictor

    predictor = Predictor(work["export"])
    compared, plain = (predict_font(work["stripped"], predictor, look_alike_prior=c) for c in (True, False))
    names = np.array(plain.label_names)
    in_sets = np.isin(names, [a for labels in LOOK_ALIKES for a in labels])
    assert in_sets.sum() > 10 and not np.allclose(compared.probs[:, in_sets], plain.probs[:, in_sets])
    np.testing.assert_allclose(compared.probs[:, ~in_sets], plain.probs[:, ~in_sets], rtol=1e-9)
    for labels in LOOK_ALIKES:
        cols = np.isin(names, labels)
        np.testing.assert_allclose(compared.probs[:, cols].sum(axis=1), plain.probs[:, cols].sum(axis=1), rtol=1e-9)
    rc, _ = cli("label-font", work["stripped"], "--checkpoint", work["export"], "--out", tmp_path / "a.csv",
                "--no-look-alike-prior")
    write_csv(tmp_path / "expected.csv", assign_font(plain).glyphs)
    assert rc == 0 and (tmp_path / "a.csv").read_text() == (tmp_path / "expected.csv").read_text()


def _amiri_images(work, count: int) -> np.ndarray:
    from glyph_train.inference.predictor import Predictor
    from glyph_train.inference.sources import default_face, face_glyphs

    records, _ = face_glyphs(default_face(work["amiri"]), with_labels=False)
    return Predictor(work["export"]).render((k, r.contours, r.em) for k, r in enumerate(records[:count])).images


def test_tta_averages_the_image_and_its_augmented_copies_the_same_every_run(work):
    """Predictor.predict(images, views): probabilities averaged over each image and `views` augmented copies,
    drawn from (view, position): the same every run and whatever the forward batch size; embeddings the image's."""
    from glyph_train.inference.predictor import Predictor, _augmented

    predictor = Predictor(work["export"])
    images = _amiri_images(work, 12)
    alone, tta = predictor.predict(images), predictor.predict(images, 3)
    copies = [_augmented(images, view, 256) for view in (1, 2, 3)]
    assert all((copy != images).any() for copy in copies) and (copies[0] != copies[1]).any()
    expected = (alone.probs + sum(predictor.predict(copy).probs for copy in copies)) / 4
    np.testing.assert_allclose(tta.probs, expected, rtol=1e-6)
    assert np.abs(tta.probs / alone.probs - 1).max() > 1e-5  # the tiny test model is near uniform
    np.testing.assert_array_equal(tta.embeddings, alone.embeddings)
    np.testing.assert_array_equal(predictor.predict(images, 3).probs, tta.probs)
    np.testing.assert_allclose(Predictor(work["export"], batch_size=5).predict(images, 3).probs, tta.probs, atol=1e-6)


def test_label_font_tta_views_sets_the_copies_averaged(work, tmp_path):
    from glyph_train.inference.label_font import TTA_VIEWS_FLAG, assign_font, predict_font, write_csv
    from glyph_train.inference.predictor import Predictor

    predictor = Predictor(work["export"])
    for views in (0, TTA_VIEWS_FLAG.default):
        rc, _ = cli("label-font", work["stripped"], "--checkpoint", work["export"], "--out", tmp_path / f"{views}.csv",
                    "--tta-views", views)
        assert rc == 0
        write_csv(tmp_path / "expected.csv", assign_font(predict_font(work["stripped"], predictor, True, views)).glyphs)
        assert (tmp_path / f"{views}.csv").read_text() == (tmp_path / "expected.csv").read_text()
    assert (tmp_path / "0.csv").read_text() != (tmp_path / f"{TTA_VIEWS_FLAG.default}.csv").read_text()
    with pytest.raises(SystemExit):
        cli("label-font", work["stripped"], "--checkpoint", work["export"], "--out", tmp_path / "x.csv",
            "--tta-views", "-1")


def test_adapting_to_a_font_fits_its_labels_the_same_every_run_and_leaves_the_export_alone(work):
    """Predictor.adapted: a fine-tuned copy (label-font --adapt-steps). It must learn the labels it is given
    (it is a real training loop), be reproducible, and never touch the predictor's own model."""
    import torch

    from glyph_train.inference.predictor import Predictor

    predictor = Predictor(work["export"])
    images = _amiri_images(work, 24)
    columns = np.arange(len(images)) % len(predictor.label_names)
    weights = {k: v.clone() for k, v in predictor.model.state_dict().items()}
    before = predictor.predict(images).probs
    adapted = predictor.adapted(images, columns, 100)
    after = adapted.predict(images).probs
    rows = np.arange(len(images))
    gain = np.log(after[rows, columns]) - np.log(before[rows, columns])
    assert gain.mean() > 0.005 and (gain > 0).mean() >= 0.9, gain  # small: lr 5e-5, a near-uniform model
    np.testing.assert_array_equal(predictor.adapted(images, columns, 100).predict(images).probs, after)
    assert all(torch.equal(v, weights[k]) for k, v in predictor.model.state_dict().items())
    np.testing.assert_array_equal(predictor.predict(images).probs, before)
    np.testing.assert_array_equal(predictor.adapted(images, columns, 0).predict(images).probs, before)


def test_adapting_a_levit_trains_its_attention_biases_and_predicts_with_them():
    """LeViT caches its attention biases in eval mode: fine-tuning an exported (eval-mode) LeViT raised
    "Trying to backward through the graph a second time" on the second step, and a stale cache would predict
    with the old biases."""
    import torch

    from glyph_train.inference.font_adaptation import fine_tuned
    from glyph_train.model.network import GlyphModel

    model = GlyphModel("levit_128s", num_classes=5, img_size=64).eval()
    images = np.random.default_rng(0).integers(0, 256, (8, 64, 64), dtype=np.uint8)
    x = torch.from_numpy(images[:, None]).float() / 255
    with torch.no_grad():
        old = model(x)["logits"]
    tuned = fine_tuned(model, images, np.arange(8) % 5, steps=3)
    biases = [n for n, _ in model.named_parameters() if "attention_biases" in n]
    assert biases and any(not torch.equal(model.get_parameter(n), tuned.get_parameter(n)) for n in biases)
    assert not tuned.training
    fresh = GlyphModel("levit_128s", num_classes=5, img_size=64)
    fresh.load_state_dict(tuned.state_dict())
    with torch.no_grad():  # a model built from the tuned weights predicts as the tuned one: no stale bias cache
        new, expected = tuned(x)["logits"], fresh.eval()(x)["logits"]
    assert not torch.allclose(old, new) and torch.allclose(new, expected)


def test_a_font_is_adapted_to_on_its_sure_labels_that_are_its_glyphs_likeliest():
    """confident_labels: a label the assignment gave for another reason than the glyph's own probabilities
    (Bangers' lowercase, copies of its capitals, taken as lowercase) would teach one image two labels."""
    from pathlib import Path

    from glyph_train.inference.label_font import FontPredictions, confident_labels

    names = ["65_isol", "97_isol", "66_isol", "67_isol"]
    probs = np.array([[0.96, 0.02, 0.01, 0.01],   # A, sure
                      [0.96, 0.02, 0.01, 0.01],   # its copy: the lowercase a by the case fold, though likeliest A
                      [0.01, 0.01, 0.60, 0.38],   # B, not sure enough
                      [0.01, 0.01, 0.02, 0.96]])  # C, sure
    pred = FontPredictions(Path("x.ttf"), "X", "Regular", [], [0, 1, 2, 3], probs, [], names, np.zeros(4, int),
                           np.full(4, 500), np.full(4, 0.7))
    rows, columns = confident_labels(pred)
    assert rows.tolist() == [0, 3] and [names[c] for c in columns] == ["65_isol", "67_isol"]


def test_label_font_adapt_steps_averages_in_a_model_adapted_to_the_font(work, tmp_path, monkeypatch):
    """--adapt-steps N (off by default): the same every run, and what predict_font gives. The tiny test model is
    never 0.9 sure of anything, so here every assigned label that is its glyph's likeliest counts as sure."""
    from glyph_train.inference import label_font
    from glyph_train.inference.font_adaptation import ADAPT_STEPS_FLAG
    from glyph_train.inference.predictor import Predictor

    assert ADAPT_STEPS_FLAG.default == 0
    predictor = Predictor(work["export"])
    unadapted = label_font.predict_font(work["stripped"], predictor)
    assert label_font.predict_font(work["stripped"], predictor, adapt_steps=20).probs.tolist() == \
        unadapted.probs.tolist()  # nothing 0.9 sure: nothing to adapt to
    monkeypatch.setattr(label_font, "PSEUDO_LABEL_CONFIDENCE", 0.0)
    monkeypatch.setattr(label_font, "MIN_PSEUDO_LABELS", 2)
    assert len(label_font.confident_labels(unadapted)[0]) >= 2
    adapted = label_font.predict_font(work["stripped"], predictor, adapt_steps=20)
    assert np.abs(adapted.probs - unadapted.probs).max() > 1e-4
    np.testing.assert_allclose(adapted.probs.sum(axis=1), 1.0, rtol=1e-5)
    for steps, expected in ((0, unadapted), (20, adapted)):
        rc, _ = cli("label-font", work["stripped"], "--checkpoint", work["export"], "--out", tmp_path / f"{steps}.csv",
                    "--adapt-steps", steps)
        assert rc == 0
        label_font.write_csv(tmp_path / "expected.csv", label_font.assign_font(expected).glyphs)
        assert (tmp_path / f"{steps}.csv").read_text() == (tmp_path / "expected.csv").read_text()
    with pytest.raises(SystemExit):
        cli("label-font", work["stripped"], "--checkpoint", work["export"], "--out", tmp_path / "x.csv",
            "--adapt-steps", "-1")


def test_bf16_predicts_under_autocast_close_to_fp32_and_label_font_bf16_uses_it(work, tmp_path):
    from glyph_train.inference.label_font import assign_font, predict_font, write_csv
    from glyph_train.inference.predictor import Predictor

    images = _amiri_images(work, 24)
    fp32, bf16 = Predictor(work["export"]).predict(images), Predictor(work["export"], bf16=True).predict(images)
    difference = np.abs(bf16.probs - fp32.probs).max()
    assert 0 < difference < 0.01, difference  # bf16 rounds (8 bits of mantissa): different, and close
    assert np.abs(bf16.embeddings - fp32.embeddings).max() < 0.05 and bf16.probs.dtype == fp32.probs.dtype
    rc, _ = cli("label-font", work["stripped"], "--checkpoint", work["export"], "--out", tmp_path / "bf16.csv", "--bf16")
    assert rc == 0
    write_csv(tmp_path / "expected.csv", assign_font(predict_font(work["stripped"], Predictor(work["export"],
                                                                                            bf16=True))).glyphs)
    assert (tmp_path / "bf16.csv").read_text() == (tmp_path / "expected.csv").read_text()


@pytest.fixture(scope="module")
def second_export(work) -> Path:
    """Another export of the same labels and renders, with other weights (one epoch instead of two)."""
    from conftest import train_tiny

    return train_tiny(work["db"], work["root"], work["root"] / "second", epochs=1)


def test_an_ensemble_averages_its_exports_probabilities_and_label_font_takes_several_checkpoints(
        work, second_export, tmp_path):
    """label-font --checkpoint A B: each glyph's probabilities are the mean of A's and B's (each calibrated
    with its own temperature, over the same augmented copies); the embedding is a unit vector whose inner
    products are the mean of the members' cosines; adapted, each member adapts."""
    from glyph_train.inference.label_font import assign_font, predict_font, write_csv
    from glyph_train.inference.predictor import Ensemble, Predictor, load_predictor

    a, b = Predictor(work["export"]), Predictor(second_export)
    assert a.label_names == b.label_names and a.temperature != b.temperature
    ensemble = load_predictor([work["export"], second_export])
    assert isinstance(ensemble, Ensemble) and isinstance(load_predictor([second_export]), Predictor)
    images = _amiri_images(work, 12)
    pa, pb, pe = a.predict(images, 2), b.predict(images, 2), ensemble.predict(images, 2)
    assert np.abs(pa.probs - pb.probs).max() > 1e-3
    np.testing.assert_allclose(pe.probs, (pa.probs + pb.probs) / 2, rtol=1e-6)
    assert pe.embeddings.shape == (12, a.embedding_dim + b.embedding_dim) == (12, ensemble.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(pe.embeddings, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(pe.embeddings @ pe.embeddings.T,
                               (pa.embeddings @ pa.embeddings.T + pb.embeddings @ pb.embeddings.T) / 2, atol=1e-5)
    columns = np.arange(12) % len(a.label_names)
    adapted = ensemble.adapted(images, columns, 5)
    each = [m.adapted(images, columns, 5).predict(images).probs for m in (a, b)]
    np.testing.assert_allclose(adapted.predict(images).probs, (each[0] + each[1]) / 2, rtol=1e-6)
    rc, out = cli("label-font", work["stripped"], "--checkpoint", work["export"], second_export,
                  "--out", tmp_path / "ensemble.csv")
    assert rc == 0, out
    write_csv(tmp_path / "expected.csv", assign_font(predict_font(work["stripped"], Ensemble([a, b]))).glyphs)
    assert (tmp_path / "ensemble.csv").read_text() == (tmp_path / "expected.csv").read_text()
    write_csv(tmp_path / "a.csv", assign_font(predict_font(work["stripped"], a)).glyphs)
    assert (tmp_path / "a.csv").read_text() != (tmp_path / "expected.csv").read_text()


def test_the_label_font_bench_scores_an_ensemble_and_each_export_from_the_same_forward_passes(work, second_export):
    """bench_label_font --checkpoint A B --each: the ensemble's predictions there, made from its members' own,
    are label-font's, and each member's are its own."""
    sys.path.insert(0, str(REPO / "bench"))
    from bench_label_font import PRIORS, predictions

    from glyph_train.inference.label_font import predict_font
    from glyph_train.inference.predictor import load_predictor

    ensemble = load_predictor([work["export"], second_export])
    scored = predictions(work["stripped"], ensemble, ensemble.members, 2, 0, each=True)
    assert list(scored) == ["", "export 1", "export 2"]
    for source, predictor in zip(scored, [ensemble, *ensemble.members]):
        assert list(scored[source]) == list(PRIORS)
        for prior, (script, join, look_alike) in PRIORS.items():
            expected = predict_font(work["stripped"], predictor, script, 2, join_prior=join,
                                    look_alike_prior=look_alike).probs
            np.testing.assert_allclose(scored[source][prior].probs, expected, rtol=1e-5)


def test_the_label_font_bench_reports_each_font_and_the_fonts_add_up_to_the_totals(work):
    """bench_label_font's by_font: each font's scored glyphs, joint accuracy and words shaped identically, whose
    glyph-weighted sums are the report's totals (so a per-font table in BENCHMARKS.md is the same measurement)."""
    abril = fontpkg_file("fontpkg_abril_fatface", "AbrilFatface-Regular.ttf")  # whole: it draws every word
    fonts = [work["amiri"], abril]
    proc = subprocess.run([sys.executable, "bench/bench_label_font.py", "--checkpoint", str(work["export"]),
                           "--words", "30", "--tta-views", "0", "--thresholds", "0.5", *map(str, fonts)],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout[proc.stdout.index("\n{") + 1:])
    for variant in (f"{prior}, tta views 0" for prior in ("all_priors", "script_and_join_prior", "script_prior",
                                                          "model_only")):
        totals, by_font = report[variant], report[variant]["by_font"]
        assert sorted(by_font) == sorted(f.name for f in fonts)
        assert "arabic" not in by_font[abril.name]  # a Latin font has no Arabic glyphs or words
        for group in ("latin", "arabic"):
            scored = [f[group] for f in by_font.values() if "glyphs" in f.get(group, {})]
            assert sum(s["glyphs"] for s in scored) == totals[group]["glyphs"] > 0
            right = sum(round(s["joint_accuracy"] * s["glyphs"]) for s in scored)
            assert right == round(totals[group]["joint_accuracy"] * totals[group]["glyphs"])
            for s in scored:  # each wrong glyph listed as TRUE->ASSIGNED, ' =' where the outline forgives it
                assert len(s["errors"]) == s["glyphs"] - round(s["joint_accuracy"] * s["glyphs"])
                assert all(truth != assigned for truth, assigned in (e.split("->") for e in s["errors"]))
                right, forgiven = round(s["joint_accuracy"] * s["glyphs"]), sum(e.endswith(" =") for e in s["errors"])
                assert round(s["joint_equiv_accuracy"] * s["glyphs"]) == right + forgiven
            assert totals[group]["joint_equiv_accuracy"] >= totals[group]["joint_accuracy"]
            least = totals[group]["min_confidence_for_precision"]  # of --thresholds, where 99 % are right
            assert least is None or totals[group]["at_threshold"][str(least)]["precision"] >= 0.99
        words = totals["words_shaped_identically"]["latin"]  # the Amiri subset lacks most letters: no words
        assert words["words"] == 30 and "words_shaped_identically" not in by_font[work["amiri"].name]["latin"]
        assert by_font[abril.name]["latin"]["words_shaped_identically"] == words["share"]
        cmap = totals["repaired_cmap"]  # the originals' code points the repaired fonts map to the same outline
        assert cmap["code_points"] >= cmap["mapped"] >= cmap["identical"] and cmap["code_points"] > 0
        assert cmap["precision"] == round(cmap["identical"] / max(cmap["mapped"], 1), 4)
        assert all(0 <= f["cmap_identical"] <= 1 for f in by_font.values())


def test_an_ensemble_of_exports_with_other_labels_or_renders_is_refused_in_one_line(work, tmp_path, capsys):
    other_labels, other_fit = tmp_path / "labels", tmp_path / "fit"
    for copy in (other_labels, other_fit):
        copy.mkdir()
        for f in work["export"].iterdir():
            (copy / f.name).write_bytes(f.read_bytes())
    labels = json.loads((other_labels / "labels.json").read_text())
    (other_labels / "labels.json").write_text(json.dumps(labels[::-1]))
    config = json.loads((other_fit / "config.json").read_text())
    (other_fit / "config.json").write_text(json.dumps({**config, "fit": "tight"}))
    for copy, says in ((other_labels, "labels differ"), (other_fit, "render alike")):
        before = tree_digest(work["export"])
        rc = main(["label-font", str(work["stripped"]), "--checkpoint", str(work["export"]), str(copy),
                   "--out", str(tmp_path / "x.csv")])
        err = capsys.readouterr().err.strip()
        assert rc != 0 and says in err and str(copy) in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "x.csv").exists() and tree_digest(work["export"]) == before


def test_one_prediction_assigned_at_each_threshold_equals_label_font_at_that_threshold(work):
    # bench_label_font predicts a font once and assigns at every --min-confidence it reports
    from glyph_train.inference.label_font import assign_font, label_font, predict_font
    from glyph_train.inference.predictor import Predictor

    predictor = Predictor(work["export"])
    predicted = predict_font(work["stripped"], predictor)
    for threshold in (0.0, 0.3, 0.9):
        assert assign_font(predicted, threshold) == label_font(work["stripped"], predictor, threshold)


def test_label_font_never_overwrites_the_input(work, tmp_path, capsys):
    stripped = tmp_path / "font.ttf"
    stripped.write_bytes(work["stripped"].read_bytes())
    before = digest(stripped)
    for argv in (["--out", str(tmp_path / "l.csv"), "--write-font", str(stripped)],
                 ["--out", str(stripped)],
                 ["--out", str(tmp_path / "l.csv"), "--write-font", str(tmp_path / "." / "font.ttf")]):
        assert main(["label-font", str(stripped), "--checkpoint", str(work["export"]), *argv]) == 2
    assert digest(stripped) == before
    assert "input" in capsys.readouterr().err


def shape(path: Path, text: str, feature: str | None = None) -> list[int]:
    font = hb.Font(hb.Face(path.read_bytes()))
    buf = hb.Buffer()
    buf.add_str(text)
    buf.guess_segment_properties()
    hb.shape(font, buf, {feature: True} if feature else {})
    return [info.codepoint for info in buf.glyph_infos]


def test_repaired_font_shapes_arabic_like_the_original(work, tmp_path):
    """Labels taken from the original font's cmap and shaping, written into the stripped copy: HarfBuzz then
    picks the same glyphs (init/medi/fina included) for every word as it does with the original."""
    from glyph_train.corpus.shaping import Shaper
    from glyph_train.inference.repair import write_repaired_font
    from glyph_train.inference.sources import known_labels

    truth = known_labels(Shaper(work["amiri"].read_bytes()))
    names = TTFont(work["stripped"]).getGlyphOrder()
    out = tmp_path / "repaired.ttf"
    report = write_repaired_font(work["stripped"], out, {names[gid]: label for gid, label in truth.items()})
    assert report.substitutions["init"] and report.substitutions["medi"] and report.substitutions["fina"]
    assert not report.unmapped
    for word in WORDS:
        assert shape(out, word) == shape(work["amiri"], word), word
        assert shape(work["stripped"], word) != shape(work["amiri"], word)  # the stripped font cannot
    # the positional forms really are substituted: the medial beh is not the isolated one
    assert shape(out, "ببب")[1] != shape(out, "ب")[0]
    assert main(["label-font", str(work["stripped"]), "--checkpoint", str(work["export"]), "--out",
                 str(tmp_path / "x.csv"), "--write-font", str(work["stripped"])]) == 2


def test_a_letter_without_a_labelled_isolated_glyph_still_shapes_its_joined_forms(work, tmp_path):
    """Beh's isolated glyph left unknown (below --min-confidence, say) while its joined forms are labelled: the
    repaired font maps beh to its final glyph, so words that join beh shape as in the original, where before
    every form of beh was .notdef. The report names the stand-in."""
    from glyph_train.corpus.shaping import Shaper
    from glyph_train.inference.repair import write_repaired_font
    from glyph_train.inference.sources import known_labels

    truth = known_labels(Shaper(work["amiri"].read_bytes()))
    names = TTFont(work["stripped"]).getGlyphOrder()
    labels = {names[gid]: label for gid, label in truth.items() if label != "1576_isol"}
    out = tmp_path / "repaired.ttf"
    report = write_repaired_font(work["stripped"], out, labels)
    fina = next(g for g, label in labels.items() if label == "1576_fina")
    assert report.cmap[0x0628] == fina
    assert report.stand_ins == [
        f"{fina}: U+0628 has no glyph labelled 1576_isol; the cmap maps its fina glyph so that its joined forms "
        "shape (alone, it shows that glyph)"]
    for word in ("بحث", "يلعب", "هبة", "حب"):  # beh initial, medial, final
        assert shape(out, word) == shape(work["amiri"], word), word
    assert shape(out, "ب") != shape(work["amiri"], "ب")  # alone it is the final glyph


def test_repaired_font_substitutes_the_figure_variants(tmp_path):
    """A digit's numerator and denominator (labels 51_numr, 51_dnom: unmapped glyphs the font reaches through
    GSUB) go back into the repaired font as numr/dnom substitutions from the digit."""
    from glyph_train.corpus.shaping import Shaper
    from glyph_train.inference.repair import write_repaired_font
    from glyph_train.inference.sources import known_labels

    src = subset_font(fontpkg_file("fontpkg_amiri", "Amiri-Regular.ttf"), tmp_path / "digits.ttf", "0123",
                      features=("numr", "dnom"))
    stripped, out = strip_font(src, tmp_path / "stripped.ttf"), tmp_path / "repaired.ttf"
    truth = known_labels(Shaper(src.read_bytes()))
    assert sorted(truth.values()) == sorted(f"{cp}_{form}" for cp in range(48, 52) for form in ("isol", "numr", "dnom"))
    names = TTFont(stripped).getGlyphOrder()
    report = write_repaired_font(stripped, out, {names[gid]: label for gid, label in truth.items()})
    assert not report.unmapped and len(report.substitutions["numr"]) == len(report.substitutions["dnom"]) == 4
    for feature in ("numr", "dnom"):
        assert shape(out, "0123", feature) == shape(src, "0123", feature) != shape(out, "0123")
    assert shape(out, "0123") == shape(src, "0123")


def test_a_letter_whose_cmap_glyph_draws_nothing_is_known_by_the_glyph_its_isol_feature_gives(tmp_path):
    """Noto Nastaliq Urdu's cmap glyphs for Arabic letters draw nothing; its isol feature substitutes the
    letter's drawing. The font's own label for that letter is on the drawing (what build-db trains on and what
    text shows), not on the empty glyph: the label-font bench once scored 42 empty glyphs as misread."""
    from fontTools.feaLib.builder import addOpenTypeFeaturesFromString
    from fontTools.ttLib.tables._g_l_y_f import Glyph

    from glyph_train.corpus.shaping import Shaper
    from glyph_train.inference.sources import known_labels

    font = TTFont(subset_font(fontpkg_file("fontpkg_amiri", "Amiri-Regular.ttf"), tmp_path / "alef.ttf", "ا"))
    alef = font.getBestCmap()[0x0627]
    font.setGlyphOrder(font.getGlyphOrder() + ["alef.sep"])
    font["glyf"].glyphOrder = font.getGlyphOrder()
    font["glyf"]["alef.sep"], font["glyf"][alef] = font["glyf"][alef], Glyph()
    font["hmtx"]["alef.sep"] = font["hmtx"][alef]
    addOpenTypeFeaturesFromString(font, f"languagesystem arab dflt; feature isol {{ sub {alef} by alef.sep; }} isol;")
    font.save(tmp_path / "nastaliq_like.ttf")

    shaper = Shaper((tmp_path / "nastaliq_like.ttf").read_bytes())
    assert shaper.glyph_outline(font.getGlyphID(alef)) == ""
    assert known_labels(shaper) == {font.getGlyphID("alef.sep"): "1575_isol"}


def test_the_label_font_bench_forgives_a_label_the_font_draws_with_the_very_same_outline(tmp_path):
    """Bangers draws its lowercase a with its A's outline: no labeller reading outlines can tell the two glyphs
    apart, so bench_label_font's joint_equiv_accuracy (top1_equiv's rule) counts either label on either glyph,
    and only those."""
    sys.path.insert(0, str(REPO / "bench"))
    from bench_label_font import drawn_alike

    from glyph_train.corpus.shaping import Shaper
    from glyph_train.inference.sources import known_labels

    font = TTFont(subset_font(fontpkg_file("fontpkg_abril_fatface", "AbrilFatface-Regular.ttf"),
                              tmp_path / "abc.ttf", "ABab"))
    cmap = font.getBestCmap()
    for table in ("glyf", "hmtx"):  # HarfBuzz places a glyf outline at its hmtx side bearing
        font[table][cmap[ord("a")]] = font[table][cmap[ord("A")]]
    font.save(tmp_path / "caps.ttf")
    shaper = Shaper((tmp_path / "caps.ttf").read_bytes())
    alike = drawn_alike(shaper, known_labels(shaper))
    a, capital_a, b = (font.getGlyphID(cmap[ord(c)]) for c in "aAb")
    assert alike(a, "65_isol") and alike(capital_a, "97_isol") and alike(a, "97_isol")
    assert not alike(b, "66_isol") and not alike(a, "66_isol") and not alike(b, "97_isol")


def test_joint_assignment_gives_a_glyph_its_second_choice_rather_than_a_label_a_surer_glyph_has():
    from glyph_train.inference.label_font import DUPLICATE_COST, assign_labels

    probs = np.array([[0.90, 0.05, 0.05],   # glyph 0 and 1 both prefer label 0; glyph 0 is surer
                      [0.60, 0.35, 0.05],   # ... and label 1 is not far less likely for glyph 1
                      [0.34, 0.33, 0.33]])  # too unsure for 0.5
    for cost in (DUPLICATE_COST, math.inf):
        np.testing.assert_array_equal(assign_labels(probs, 0.3, duplicate_cost=cost)[0], [0, 1, 2])
        np.testing.assert_array_equal(assign_labels(probs, 0.5, duplicate_cost=cost)[0], [0, -1, -1])
    assert assign_labels(np.zeros((0, 3)), 0.5)[0].shape == (0,)


def test_a_label_drawn_twice_stays_with_both_glyphs():
    """Fonts do draw a character twice: `i` and `i.loclTRK`, `three` and `three.tf` drawn a little apart, a
    Persian letter drawn like the Arabic one. With one glyph per label, whichever copy scored higher took
    the label and the glyph the font maps lost it (40 of the 70 Latin letters and digits label-font lost on
    the held-out fonts, BENCHMARKS.md 9g). A glyph far likelier a taken label than any other keeps it."""
    from glyph_train.inference.label_font import assign_labels

    probs = np.array([[0.97, 0.02, 0.01],   # i
                      [0.98, 0.01, 0.01],   # i.loclTRK: another drawing, a shade likelier i
                      [0.05, 0.90, 0.05]])  # l
    np.testing.assert_array_equal(assign_labels(probs, 0.5)[0], [0, 0, 1])
    np.testing.assert_array_equal(assign_labels(probs, 0.0, duplicate_cost=math.inf)[0], [2, 0, 1])  # i lost its label
    np.testing.assert_array_equal(assign_labels(probs, 0.0, duplicate_cost=0.0)[0], probs.argmax(1))


def test_the_threshold_hides_labels_and_never_moves_one_to_another_glyph():
    from glyph_train.inference.label_font import assign_labels

    rng = np.random.default_rng(0)
    for _ in range(20):
        probs = rng.dirichlet(np.full(6, 0.3), size=8)
        base = assign_labels(probs, 0.0)[0]
        for threshold in (0.3, 0.6, 0.9):
            chosen = probs[np.arange(8), base]
            np.testing.assert_array_equal(assign_labels(probs, threshold)[0], np.where(chosen >= threshold, base, -1))


def test_a_glyph_likelier_other_than_any_label_stays_unknown_and_the_other_class_is_never_assigned():
    """Column 2 is the export's other class (--others-per-label). Glyph 1 (say uni0752.fina, beh with three
    dots) looks more like label 0 than glyph 0 (beh.fina) does, but is likelier none of the labels: with
    the other class it stays unknown and glyph 0 keeps label 0; without it, glyph 1 gets a label. No glyph
    ever gets the other column, whatever the threshold."""
    from glyph_train.inference.label_font import assign_labels

    probs = np.array([[0.40, 0.25, 0.35],
                      [0.45, 0.00, 0.55],
                      [0.10, 0.10, 0.80],
                      [0.05, 0.90, 0.05]])
    np.testing.assert_array_equal(assign_labels(probs, 0.3, other=2)[0], [0, -1, -1, 1])
    np.testing.assert_array_equal(assign_labels(probs, 0.0, other=2)[0], [0, -1, -1, 1])
    np.testing.assert_array_equal(assign_labels(probs, 0.3)[0], [0, 2, 2, 1])  # column 2 as a label: its second glyph


def _assignment_cost(probs: np.ndarray, out: np.ndarray, other: int | None, cost: float) -> tuple[int, float]:
    """(rows left unknown without an other class, as there are more rows than slots; the summed cost of the
    rest: -log p of each row's label, a label's k-th row paying (k - 1) * cost more, copies in any order)."""
    logp, total, forced, used = np.log(probs), 0.0, 0, {}
    for row, label in enumerate(out):
        if label < 0 and other is None:
            forced += 1
        elif label < 0:
            total -= logp[row, other]
        else:
            assert label != other
            total += -logp[row, label] + (used.get(label, 0) * cost if used.get(label, 0) else 0.0)
            used[label] = used.get(label, 0) + 1
    return forced, total


def test_the_sparse_assignment_reaches_the_dense_optimum():
    """Against the dense linear_sum_assignment label-font used before (bench/bench_label_font_speed.py keeps
    it as the baseline): the same optimum on random problems, whichever of equal-cost answers each picks."""
    sys.path.insert(0, str(REPO / "bench"))
    from bench_label_font_speed import dense_assignment

    from glyph_train.inference.label_font import _assign_distinct

    rng = np.random.default_rng(0)
    for trial in range(40):
        n, c = rng.integers(1, 40), rng.integers(2, 25)
        probs = rng.dirichlet(np.full(c, 0.3), size=n)
        other = None if trial % 2 else c - 1
        for cost in (0.0, 2.0, math.inf):
            forced, total = _assignment_cost(probs, _assign_distinct(probs, other, cost), other, cost)
            expected_forced, expected_total = _assignment_cost(probs, dense_assignment(probs, other, cost), other, cost)
            assert forced == expected_forced and total == pytest.approx(expected_total, abs=1e-6), (trial, cost)


def test_the_assignments_memory_grows_with_the_glyphs_not_their_square():
    """A 5,000-glyph font: the dense cost matrix alone was 5,000 x 5,000 float64 (200 MB) for the unknown slots;
    a CJK font (20,000-65,000 glyphs) ran out of memory."""
    import tracemalloc

    from glyph_train.inference.label_font import EXTRA_COPIES, assign_labels

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(100, 0.1), size=5000)
    tracemalloc.start()
    labels, _ = assign_labels(probs, 0.0, other=99)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    most = 99 * (1 + EXTRA_COPIES)  # 99 labels and the other class, 1 + EXTRA_COPIES glyphs a label at most
    assert peak < 60 * 2**20 and 0.75 * most < (labels >= 0).sum() <= most


def test_copies_of_one_drawing_share_a_label_unless_another_is_near():
    """Fonts copy drawings: a tabular zero drawn like the proportional one, a shaped Arabic form and its
    presentation-form glyph. With one glyph per label the copy was pushed onto its second choice (when that
    was the glyph the cmap maps, the font lost the letter: 133 such pairs in the Arabic fonts of
    bench_label_font). With the duplicate cost both keep the label their second choice is far below."""
    from glyph_train.inference.label_font import assign_labels

    probs = np.array([[0.90, 0.06, 0.04],   # the presentation-form copy
                      [0.90, 0.06, 0.04],   # the shaped glyph: the same drawing
                      [0.05, 0.05, 0.90]])
    assert assign_labels(probs, 0.0)[0].tolist() == [0, 0, 2]
    assert sorted(assign_labels(probs, 0.0, duplicate_cost=math.inf)[0].tolist()) == [0, 1, 2]  # one is pushed


def test_a_letter_drawn_for_three_scripts_and_as_alternates_keeps_its_label_on_every_glyph():
    """Roboto draws O for Latin, Greek and Cyrillic and as four alternates, and the export, with no Greek or
    Cyrillic classes, reads all seven as O. At most four glyphs a label left three unknown, Roboto's own O among
    them (the least likely), and the repaired font mapped O to an alternate (BENCHMARKS.md §14ab)."""
    from glyph_train.inference.label_font import assign_labels

    probs = np.array([[0.999990 + 1e-6 * k, 1e-6, 1e-6] for k in range(7)])  # O, 0, other; row 0 the font's O
    labels, confidence = assign_labels(probs, 0.98, other=2)
    assert labels.tolist() == [0] * 7 and np.allclose(confidence, probs[:, 0])
    four = assign_labels(probs, 0.98, other=2, extra_copies=3)[0]
    assert (four == 0).sum() == 4 and four[0] != 0


def test_a_digit_drawn_small_stays_the_digit_when_no_glyph_is_likelier_it():
    """Dekko draws a 0 and a 5 the model, one glyph at a time, finds a shade likelier their numerators, and the
    assignment gave them the numerators' labels and left the digits without a glyph (BENCHMARKS.md §14ac).
    A font draws every digit: the first glyph of one earns DRAWN_BONUS, so a digit's glyph keeps the digit
    unless its variant is e times likelier, and a font that draws the numerator too keeps both."""
    from glyph_train.inference.label_font import DRAWN_BONUS, always_drawn, assign_labels

    names = ["50_isol", "50_numr", "51_isol", "51_numr"]
    bonus = np.where(always_drawn(names), DRAWN_BONUS, 0.0)
    assert bonus.tolist() == [DRAWN_BONUS, 0.0, DRAWN_BONUS, 0.0]
    dekko = np.array([[0.35, 0.60, 0.03, 0.02],   # 2, drawn small: a shade likelier its numerator
                      [0.03, 0.02, 0.35, 0.60]])  # 3
    assert assign_labels(dekko, 0.0)[0].tolist() == [1, 3]  # no 2, no 3
    assert assign_labels(dekko, 0.0, bonus=bonus)[0].tolist() == [0, 2]
    numerators = np.array([[0.35, 0.60, 0.03, 0.02],   # 2
                           [0.10, 0.85, 0.03, 0.02],   # 2.numr
                           [0.02, 0.03, 0.05, 0.90]])  # 3.numr, far likelier the numerator than the 3
    assert assign_labels(numerators, 0.0, bonus=bonus)[0].tolist() == [0, 1, 3]


def test_the_drawn_bonus_goes_to_the_letters_and_digits_of_the_scripts_the_font_draws():
    """Only the core labels (launch/core_labels.txt) earn it, and only where the font draws their script (by
    the script prior's shares, estimated when that prior is off): an Arabic letter's first glyph earns nothing
    in a Latin font, where it would pull a glyph to a script the font lacks."""
    from glyph_train.corpus.db import parse_label_list
    from glyph_train.inference.label_font import DRAWN_BONUS, FontPredictions, always_drawn, drawn_bonus

    core = parse_label_list(REPO / "launch" / "core_labels.txt")
    names = parse_label_list(REPO / "launch" / "label_font_labels.txt")
    assert all(always_drawn(core)) and {n for n, d in zip(names, always_drawn(names)) if d} == set(core)

    names = ["65_isol", "49_isol", "1576_init", "49_numr", "193_isol"]  # A, 1, beh's initial, 1's numerator, Á
    probs = np.array([[0.90, 0.04, 0.02, 0.02, 0.02], [0.04, 0.90, 0.02, 0.02, 0.02],
                      [0.50, 0.02, 0.02, 0.02, 0.44], [0.04, 0.40, 0.02, 0.52, 0.02]])
    latin = FontPredictions(Path("f.ttf"), "F", "Regular", [], [0, 1, 2, 3], probs, [], names,
                            np.zeros(4, np.int64), np.zeros(4, np.int64), np.zeros(4))
    assert drawn_bonus(latin).tolist() == [DRAWN_BONUS, DRAWN_BONUS, 0.0, 0.0, 0.0]
    assert drawn_bonus(latin, 2.5).tolist() == [2.5, 2.5, 0.0, 0.0, 0.0]
    both = dataclasses.replace(latin, script_shares={"LATIN": 0.4, "COMMON": 0.3, "ARABIC": 0.3})
    assert drawn_bonus(both).tolist() == [DRAWN_BONUS, DRAWN_BONUS, DRAWN_BONUS, 0.0, 0.0]


def test_a_fonts_second_drawing_of_a_capital_is_its_lowercase():
    """Bangers draws its lowercase as its capitals, Cinzel as small capitals: the model, one glyph at a time,
    calls both glyphs A (Bangers and Cinzel had 52 wrong Latin letters of the held-out fonts' 103). A font's
    second A, with no glyph likelier a, is its a: the later in glyph order, with the two cases' probability.
    A font that has its a keeps it, and its small capital A shares A."""
    from glyph_train.inference.label_font import assign_labels, case_pairs

    cases = case_pairs(["65_isol", "97_isol", "66_isol", "98_isol", "49_isol"])
    assert [c.tolist() for c in cases] == [[0, 2], [1, 3], [False, False]]  # a is no smaller A
    bangers = np.array([[0.96, 0.01, 0.01, 0.01, 0.01],   # A
                        [0.01, 0.01, 0.96, 0.01, 0.01],   # B
                        [0.96, 0.01, 0.01, 0.01, 0.01],   # a: the A's drawing
                        [0.01, 0.01, 0.96, 0.01, 0.01]])  # b
    labels, confidence = assign_labels(bangers, 0.5, cases=cases)
    assert labels.tolist() == [0, 2, 1, 3]
    np.testing.assert_allclose(confidence, [0.96, 0.96, 0.97, 0.97])
    assert assign_labels(bangers, 0.5)[0].tolist() == [0, 2, 0, 2]  # without the cases: two As, two Bs
    normal = np.array([[0.96, 0.01, 0.01, 0.01, 0.01],   # A
                       [0.01, 0.96, 0.01, 0.01, 0.01],   # a
                       [0.94, 0.03, 0.01, 0.01, 0.01]])  # A.sc, a small capital A
    assert assign_labels(normal, 0.5, cases=cases)[0].tolist() == [0, 1, 0]


def test_of_two_drawings_the_case_fold_makes_tie_the_shorter_is_the_lowercase():
    """Roboto lists its Cyrillic copies of c, s, v, w, x, z after its C, S, V, W, X, Z: glyph order alone gave
    the lowercase label to the later drawing, the copy of the capital, and the capital's to the lowercase c.
    Where the lowercase is the capital's shape drawn smaller, the ink's top decides first (the lowercase is the
    shorter); drawings of one height, and letters of two shapes (an accented A is no taller A), go by glyph
    order."""
    from glyph_train.inference.label_font import assign_labels, case_pairs

    cases = case_pairs(["67_isol", "99_isol"])
    assert cases[2].tolist() == [True]  # c is a smaller C
    probs = np.array([[0.96, 0.04],   # c, called C
                      [0.97, 0.03],   # C
                      [0.97, 0.03]])  # Cyrillic Es, the C's copy, listed later
    tops = np.array([0.53, 0.72, 0.72])
    assert assign_labels(probs, 0.5, cases=cases, tops=tops)[0].tolist() == [1, 0, 0]
    assert assign_labels(probs, 0.5, cases=cases)[0].tolist() == [0, 0, 1]  # by glyph order alone
    assert assign_labels(probs, 0.5, cases=cases, tops=np.full(3, 0.72))[0].tolist() == [0, 0, 1]
    a_cases = case_pairs(["65_isol", "97_isol"])  # a: the plain A is shorter than its accented copy, listed later
    assert assign_labels(probs, 0.5, cases=a_cases, tops=np.array([0.72, 0.72, 0.93]))[0].tolist() == [0, 0, 1]


def test_the_repaired_font_maps_the_likeliest_glyph_of_a_label_and_breaks_near_ties_by_glyph_order():
    """One glyph per label in the repaired font. Anton's `f_f_l` shares m's label at lower probability and comes
    first in glyph order: it took the m's place (Anton shaped 163 of 300 Latin words identically). `three`
    and `three.tf` are a near-tie: the default, listed first, stays."""
    from glyph_train.inference.label_font import FontLabels, GlyphLabel

    glyphs = [GlyphLabel("f_f_l", 1, "109_isol", 0.60, "109_isol"), GlyphLabel("three", 2, "51_isol", 0.95, "51_isol"),
              GlyphLabel("m", 3, "109_isol", 0.99, "109_isol"), GlyphLabel("three.tf", 4, "51_isol", 0.97, "51_isol")]
    result = FontLabels(Path("f.ttf"), "F", "Regular", glyphs, [])
    assert result.assignment() == {"m": "109_isol", "three": "51_isol"}


def test_the_repaired_font_maps_a_spacing_character_to_a_glyph_with_an_advance():
    """Gelasio's zero-width combining diaeresis (uni0308) comes first and is likelier ¨ than its dieresis: the
    repaired font typed ¨ as a mark over the previous letter. A spacing character's glyph has an advance; a
    label whose holders all lack one still maps one of them, and a combining mark's label prefers the mark."""
    from glyph_train.inference.label_font import FontLabels, GlyphLabel

    glyphs = [GlyphLabel("uni0308", 1, "168_isol", 1.00, "168_isol", spacing=False),
              GlyphLabel("dieresis", 2, "168_isol", 0.97, "168_isol"),
              GlyphLabel("acutecomb", 3, "180_isol", 0.99, "180_isol", spacing=False),
              GlyphLabel("acute.alt", 4, "769_isol", 0.90, "769_isol"),
              GlyphLabel("uni0301", 5, "769_isol", 0.80, "769_isol", spacing=False)]
    result = FontLabels(Path("f.ttf"), "F", "Regular", glyphs, [])
    assert result.assignment() == {"dieresis": "168_isol", "acutecomb": "180_isol", "uni0301": "769_isol"}


def test_the_repaired_font_maps_the_first_of_a_drawings_copies():
    from glyph_train.inference.label_font import FontLabels, GlyphLabel

    glyphs = [GlyphLabel("zero", 1, "48_isol", 0.9, "48_isol"), GlyphLabel("one", 2, "49_isol", 0.9, "49_isol"),
              GlyphLabel("zero.tf", 3, "48_isol", 0.9, "48_isol"), GlyphLabel("x", 4, "unknown", 0.1, "")]
    result = FontLabels(Path("f.ttf"), "F", "Regular", glyphs, [])
    assert result.assignment() == {"zero": "48_isol", "one": "49_isol"}
