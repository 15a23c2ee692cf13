"""Every benchmark script starts as BENCHMARKS.md runs it: `python bench/NAME.py`, from the repo root, with no
PYTHONPATH. (bench_search.py once imported `bench.bench_faiss`, which only worked with the root on the path.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (REPO / "bench").glob("bench_*.py"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_bench_script_starts(script: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, f"bench/{script}", "--help"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout


def test_label_font_bench_shapes_only_words_the_font_has_every_letter_of(tmp_path):
    """A Latin font shapes an Arabic word as .notdef boxes, identical in the original and in any repair: those
    words once counted as "shaped identically" and inflated the Arabic share with the Latin fonts."""
    sys.path.insert(0, str(REPO / "bench"))
    sys.path.insert(0, str(REPO / "tests"))
    from bench_label_font import ARABIC_LETTERS, LATIN_LETTERS, original_words
    from fontfactory import fontpkg_file, subset_font

    from glyph_train.corpus.fonts import sfnt_data
    from glyph_train.corpus.shaping import Shaper

    latin = subset_font(fontpkg_file("fontpkg_bebas_neue", "BebasNeue-Regular.ttf"), tmp_path / "latin.ttf",
                        "".join(LATIN_LETTERS))  # its .notdef is a drawn box
    shaper = Shaper(sfnt_data(latin))
    assert original_words(shaper, ARABIC_LETTERS, 50, seed=0) == []
    shaped = original_words(shaper, LATIN_LETTERS, 50, seed=0)
    assert len(shaped) == 50 and all(len(seq) == len(word) for word, seq in shaped)


def test_label_font_bench_compares_the_repaired_cmap_with_the_originals_by_outline(tmp_path):
    """repaired_cmap: a font agrees with itself on every code point it draws and the export knows; a repair that
    maps ¨ to the zero-width combining diaeresis (its drawing, without an advance) and forgets B agrees on the
    rest."""
    sys.path.insert(0, str(REPO / "bench"))
    sys.path.insert(0, str(REPO / "tests"))
    from bench_label_font import cmap_agreement
    from fontfactory import fontpkg_file, subset_font
    from fontTools.ttLib import TTFont

    from glyph_train.corpus.fonts import sfnt_data
    from glyph_train.corpus.shaping import Shaper

    font = subset_font(fontpkg_file("fontpkg_lora", "Lora[wght].ttf"), tmp_path / "lora.ttf", "AB ¨\u0308")
    known = {"65_isol", "66_isol", "168_isol", "776_isol"}
    original = Shaper(sfnt_data(font))
    assert cmap_agreement(original, original, known) == (4, 4, 4)  # the space draws nothing
    tt = TTFont(font)
    for table in tt["cmap"].tables:
        table.cmap.pop(0x42, None)
        table.cmap[0xA8] = table.cmap[0x0308]
    tt.save(tmp_path / "repaired.ttf")
    assert cmap_agreement(original, Shaper(sfnt_data(tmp_path / "repaired.ttf")), known) == (4, 3, 2)


def test_label_font_bench_finds_the_least_threshold_whose_labels_reach_the_precision():
    """How label-font's default --min-confidence is chosen (#8: >= 99 % precision): the least threshold whose
    labelled glyphs are that right; one that labels nothing is no answer, however precise."""
    sys.path.insert(0, str(REPO / "bench"))
    from bench_label_font import least_threshold

    counts = {"labelled@0.5": 100, "right@0.5": 97, "labelled@0.9": 80, "right@0.9": 79,
              "labelled@0.98": 0, "right@0.98": 0}
    thresholds = [0.5, 0.9, 0.98]
    assert least_threshold(counts, thresholds, 0.9) == 0.5
    assert least_threshold(counts, thresholds, 0.98) == 0.9  # 79 of 80
    assert least_threshold(counts, thresholds, 0.99) is None


def test_label_font_bench_takes_every_nth_fontsource_package_and_skips_one_without_the_subset(tmp_path, capsys):
    """`--fontsource more,script --every 4`: the second set of unseen families of BENCHMARKS.md §14ac, from the
    download cache (packages in it are not fetched again)."""
    sys.path.insert(0, str(REPO / "bench"))
    from bench_label_font import fontsource_fonts

    for name in ("alpha", "bravo", "charlie", "delta", "echo"):
        (tmp_path / name / "files").mkdir(parents=True)
        (tmp_path / name / "metadata.json").write_text("{}")
        if name != "echo":
            (tmp_path / name / "files" / f"{name}-latin-400-normal.woff2").write_bytes(b"wOF2")
    fonts = fontsource_fonts("alpha,bravo,charlie,delta,echo", 2, "latin", tmp_path)
    assert [f.name for f in fonts] == ["alpha-latin-400-normal.woff2", "charlie-latin-400-normal.woff2"]
    assert "skipped echo: it has no latin 400 normal file" in capsys.readouterr().err
    assert fontsource_fonts("alpha,bravo", 1, "arabic", tmp_path) == []


def test_label_font_bench_ceiling_shapes_without_what_a_repair_cannot_rebuild(tmp_path):
    """The ceiling of "words shaped identically": the original shaped without its ligatures and contextual
    features. Amiri draws lam-alef and beh before beh with contextual forms of their own, which a repaired font
    (cmap + positional forms) lacks; meem-noon shapes the same either way."""
    sys.path.insert(0, str(REPO / "bench"))
    sys.path.insert(0, str(REPO / "tests"))
    from bench_label_font import NOT_REPAIRED, outline_sequence
    from fontfactory import fontpkg_file, subset_font

    from glyph_train.corpus.fonts import sfnt_data
    from glyph_train.corpus.shaping import Shaper

    font = subset_font(fontpkg_file("fontpkg_amiri", "Amiri-Regular.ttf"), tmp_path / "amiri.ttf", "لابمن",
                       features=("init", "medi", "fina", "isol", "rlig", "liga", "calt"))
    shaper = Shaper(sfnt_data(font))
    assert outline_sequence(shaper, "بلا") != outline_sequence(shaper, "بلا", NOT_REPAIRED)
    assert outline_sequence(shaper, "ببب") != outline_sequence(shaper, "ببب", NOT_REPAIRED)
    assert outline_sequence(shaper, "من") == outline_sequence(shaper, "من", NOT_REPAIRED)


def test_label_font_speed_bench_finds_the_baselines_choosing_the_same_labels():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "bench/bench_label_font_speed.py", "--glyphs", "40,400", "--labels", "30",
                           "--repeats", "1"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["glyphs"] for r in rows] == [40, 400] and all(r["same_labels"] for r in rows)
    assert all(r["softmax_max_diff"] < 1e-12 for r in rows)
    # the priors' EM on each glyph's mass per group gives the per-label formulation's probabilities
    assert all(r[f"{kind}_prior_max_diff"] < 1e-9 for r in rows for kind in ("script", "join"))


def test_embed_bf16_bench_compares_the_two_indexes_of_one_export(work):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "bench/bench_embed_bf16.py", "--checkpoint", str(work["export"]),
                           "--repeats", "1", "--threads", "1", str(work["amiri"]), str(work["latin"])], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert result["glyphs"] > 20 and 0 < result["recall_at_10_vs_fp32"] <= 1  # the tiny model: near-ties
    assert 0 <= result["bf16_label_precision_at_10"] <= 1 and 0.5 < result["same_predicted_label"] <= 1
