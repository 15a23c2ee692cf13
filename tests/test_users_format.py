"""The users' glyphs.db contour format, typed in by hand from its spec (not written by our own writer).

Every DB users have was written by the old system: `["moveTo", [x, y]]` and `["lineTo", [x, y]]` with ONE
point, `["curveTo", [[x1, y1], [x2, y2], [x3, y3]]]`, `["qCurveTo", [[x, y], ..., end]]` (end null for an
all-off-curve contour) and `["closePath", null]`. Each command must read it: prepare, train, show, evaluate.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from glyph_train.cache.raster import RenderParams, parse_contours, render
from glyph_train.cli import main as cli_main
from glyph_train.corpus.font_rows import em_box_from_metrics
from tests.dbfactory import SCHEMA

REPO = Path(__file__).resolve().parents[1]

# A square with a square hole (lines; the hole wound the other way), font units, y up.
SQUARE_WITH_HOLE = ('[[["moveTo",[100,0]],["lineTo",[100,600]],["lineTo",[700,600]],["lineTo",[700,0]],'
                    '["closePath",null]],'
                    '[["moveTo",[250,150]],["lineTo",[550,150]],["lineTo",[550,450]],["lineTo",[250,450]],'
                    '["closePath",null]]]')
# A TrueType circle made only of off-curve points: a qCurveTo chain whose end is null, no moveTo.
OFF_CURVE_CIRCLE = '[[["qCurveTo",[[400,0],[700,300],[400,600],[100,300],null]],["closePath",null]]]'
# A quadratic chain (three off-curve points between two on-curve points) closed by a line: a "D".
QUAD_CHAIN_D = ('[[["moveTo",[100,0]],["qCurveTo",[[500,0],[700,300],[500,600],[100,600]]],'
                '["closePath",null]]]')
# A cubic teardrop, and a cubic ring: an outer cubic outline with a cubic hole (PostScript direction).
CUBIC_DROP = ('[[["moveTo",[400,0]],["curveTo",[[750,0],[750,400],[400,650]]],'
              '["curveTo",[[50,400],[50,0],[400,0]]],["closePath",null]]]')
CUBIC_RING = ('[[["moveTo",[400,0]],["curveTo",[[180,0],[50,150],[50,300]]],["curveTo",[[50,450],[180,600],[400,600]]],'
              '["curveTo",[[620,600],[750,450],[750,300]]],["curveTo",[[750,150],[620,0],[400,0]]],["closePath",null]],'
              '[["moveTo",[400,200]],["curveTo",[[460,200],[500,250],[500,300]]],["curveTo",[[500,350],[460,400],[400,400]]],'
              '["curveTo",[[340,400],[300,350],[300,300]]],["curveTo",[[300,250],[340,200],[400,200]]],["closePath",null]]]')
# A "T" of lines, and an "L" with an open subpath (no closePath: filling closes it anyway).
LETTER_T = ('[[["moveTo",[50,600]],["lineTo",[750,600]],["lineTo",[750,500]],["lineTo",[450,500]],'
            '["lineTo",[450,0]],["lineTo",[350,0]],["lineTo",[350,500]],["lineTo",[50,500]],["closePath",null]]]')
LETTER_L_OPEN = '[[["moveTo",[100,0]],["lineTo",[100,600]],["lineTo",[200,600]],["lineTo",[200,100]],["lineTo",[600,100]],["lineTo",[600,0]]]]'

GLYPHS = {"65_isol": SQUARE_WITH_HOLE, "79_isol": OFF_CURVE_CIRCLE, "68_isol": QUAD_CHAIN_D,
          "1576_init": CUBIC_DROP, "48_isol": CUBIC_RING, "84_isol": LETTER_T, "76_isol": LETTER_L_OPEN}
CLASSES = {"1576_init": ("arabic", "BEH"), "48_isol": ("digit", "NO_JOIN")}
FAMILIES = ("Alpha", "Beta", "Gamma", "Delta", "Epsilon")


def write_users_db(path: Path, glyphs: dict[str, str] = GLYPHS) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    gid = 1000
    for n, family in enumerate(FAMILIES):
        for style in ("Regular", "Bold"):
            f_id = f"{family}-{style}-hash"
            conn.execute("INSERT INTO fonts (file_hash, file_name, family_name, style_name, upem, ascent, descent) "
                         "VALUES (?, ?, ?, ?, 1000, ?, -200)", (f_id, f"{family}-{style}.ttf", family, style, 800 + 10 * n))
            for label, contours in glyphs.items():
                cc, jg = CLASSES.get(label, ("latin", "NO_JOIN"))
                gid += 1
                conn.execute("INSERT INTO glyphs VALUES (?, ?, ?, ?, ?, ?)", (gid, f_id, label, contours, jg, cc))
    conn.commit()
    conn.close()
    return path


@pytest.fixture(scope="module")
def users_db(tmp_path_factory) -> Path:
    return write_users_db(tmp_path_factory.mktemp("users") / "glyphs.db")


def ink(contours: str, size: int = 64) -> np.ndarray:
    return render(contours, RenderParams(img_size=size, fit="tight")) > 127


@pytest.mark.parametrize("label", sorted(GLYPHS))
def test_every_literal_parses_and_renders(label: str) -> None:
    parse_contours(GLYPHS[label])  # the strict reader accepts it
    img = ink(GLYPHS[label])
    assert 0.1 < img.mean() < 0.95, f"{label}: {img.mean():.2f} of the frame inked"


def test_shapes_come_out_as_drawn() -> None:
    c = 32  # centre of a 64 px frame
    assert not ink(SQUARE_WITH_HOLE)[c, c] and ink(SQUARE_WITH_HOLE)[c, 6]  # the hole is empty, the frame inked
    assert not ink(CUBIC_RING)[c, c] and ink(CUBIC_RING)[c, 8]
    assert ink(OFF_CURVE_CIRCLE)[c, c] and not ink(OFF_CURVE_CIRCLE)[5, 5]  # a filled disc: corners empty
    assert ink(QUAD_CHAIN_D)[c, 8] and not ink(QUAD_CHAIN_D)[5, 58]  # straight back, round bowl
    t = ink(LETTER_T)
    assert t[12, c] and t[50, c] and not t[50, 8]  # bar on top, stem in the middle


def test_the_nested_form_renders_the_same() -> None:
    nested = json.loads(SQUARE_WITH_HOLE)
    for sub in nested:
        for seg in sub:
            seg[1] = [seg[1]] if seg[0] in ("moveTo", "lineTo") else []
    assert np.array_equal(render(json.dumps(nested), RenderParams(64)), render(SQUARE_WITH_HOLE, RenderParams(64)))


def test_em_fit_on_users_rows() -> None:
    em = em_box_from_metrics(1000, 800, -200)
    img = render(LETTER_T, RenderParams(img_size=64, fit="em"), em) > 127
    assert img.any() and not img[-8:].any()  # the T stands on the baseline, above the descender band


def test_prepare_train_show_evaluate_on_a_users_db(users_db: Path, tmp_path: Path, capsys) -> None:
    before = users_db.read_bytes()
    cache = tmp_path / "cache"
    assert cli_main(["prepare", "--db", str(users_db), "--out", str(cache), "--img-size", "32", "--val-frac", "0.3",
                     "--num-proc", "1"]) == 0
    info = json.loads((cache / "prepare.json").read_text())
    assert info["split_report"]["train"] + info["split_report"]["validation"] == len(GLYPHS) * len(FAMILIES) * 2
    assert info["render_skips"]["render_failed"] == 0

    sheet = tmp_path / "sheet.png"
    assert cli_main(["show", "--db", str(users_db), "--random", "20", "--out", str(sheet), "--img-size", "48"]) == 0
    assert "could not be rendered" not in capsys.readouterr().out and sheet.stat().st_size > 0

    run = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "glyph_train.train", "--data", str(cache), "--model", "test_vit", "--epochs", "1",
         "--batch-size", "8", "--num-workers", "0", "--out-dir", str(run), "--wandb-mode", "disabled"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    metrics = tmp_path / "metrics.json"
    assert cli_main(["evaluate", "--checkpoint", str(run / "export"), "--db", str(users_db),
                     "--out", str(metrics)]) == 0
    result = json.loads(metrics.read_text())
    assert result["num_queries"] == len(GLYPHS) * len(FAMILIES) * 2 and result["rows_skipped"]["unrenderable"] == 0
    assert users_db.read_bytes() == before


def test_a_db_that_mostly_fails_to_render_stops_without_a_cache(tmp_path: Path, capsys) -> None:
    # A format we cannot read (here: points as objects) must not yield a cache of a few survivors.
    bad = '[[["moveTo",{"x":1,"y":2}],["lineTo",{"x":5,"y":9}],["closePath",null]]]'
    db = write_users_db(tmp_path / "bad.db", {**{k: bad for k in list(GLYPHS)[:5]}, **dict(list(GLYPHS.items())[5:])})
    out = tmp_path / "cache"
    assert cli_main(["prepare", "--db", str(db), "--out", str(out), "--img-size", "32", "--num-proc", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # (after the progress bar)
    assert err.startswith("glyph-train prepare: error: ") and "could not be rendered (first: glyph_id " in err, err
    assert not out.exists() and not list(tmp_path.glob(".cache.*"))


def test_a_few_failures_are_counted_and_named(tmp_path: Path, capsys) -> None:
    glyphs = {**GLYPHS, "66_isol": '[[["moveTo",[1]],["closePath",null]]]'}  # one bad label among 8
    db = write_users_db(tmp_path / "some_bad.db", glyphs)
    out = tmp_path / "cache"
    assert cli_main(["prepare", "--db", str(db), "--out", str(out), "--img-size", "32", "--num-proc", "1"]) == 0
    printed = capsys.readouterr().out
    assert "10 outline(s) could not be rendered (first: glyph_id" in printed
    info = json.loads((out / "prepare.json").read_text())
    assert info["render_skips"]["render_failed"] == 10 and info["first_render_error"].startswith("glyph_id ")
