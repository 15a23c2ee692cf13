"""show.py: contact sheets from a DB (labels / fonts / random), captions, bad input, DB untouched."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from dbfactory import write_db
from glyph_train.cache.show import contact_sheet, glyph_caption, label_char
from glyph_train.cli import main
from glyph_train.corpus.db import GlyphMeta
from glyph_train.corpus.font_rows import EmBox


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("db") / "glyphs.db"
    write_db(path, bad_rows=True, shaped=True)
    return path


def state(path):
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def test_contact_sheet_grid_and_captions():
    imgs = [np.full((32, 32), v, np.uint8) for v in (0, 80, 160, 255, 40)]
    sheet = contact_sheet(imgs, [f"{k}_isol\nFamily" for k in range(5)], cols=2,
                          borders=["green", None, "red", None, None])
    assert sheet.mode == "RGB"
    cell_w, cell_h, pad = 128, 32 + 2 * 13 + 4, 4
    assert sheet.size == (2 * (cell_w + pad) + pad, 3 * (cell_h + pad) + pad)
    arr = np.asarray(sheet)
    x = pad + (cell_w - 32) // 2
    assert (arr[pad + 10, x + 10] == 0).all()  # image pixels are pasted as they are
    assert (arr[pad + 10, x + cell_w + pad + 10] == 80).all()
    assert tuple(arr[pad - 2, x + 5]) == (0, 128, 0)  # green border around cell 0
    with pytest.raises(ValueError):
        contact_sheet(imgs, ["only one"])


def test_captions_name_label_character_and_font():
    g = GlyphMeta(1, "h", "Amiri", "1576_init", "BEH", "arabic", EmBox(1000, 800, -200), "Bold")
    assert glyph_caption(g) == "1576_init  \u0628  U+0628\nAmiri\nBold"
    assert label_char("65_isol") == "A" and label_char("32_isol") is None and label_char("weird") is None
    assert label_char("1593_init_shaped") == "\u0639"


@pytest.mark.parametrize("how", [["--labels", "65_isol,1576_init,103_isol"], ["--fonts", "Lora Bold,amiri"],
                                 ["--random", "12"]])
def test_cli_show_writes_a_sheet_and_leaves_the_db_untouched(db, tmp_path, capsys, how):
    before = state(db)
    out = tmp_path / "sheet.png"
    assert main(["show", "--db", str(db), *how, "--out", str(out), "--img-size", "48", "--cols", "6"]) == 0
    assert state(db) == before
    img = Image.open(out)
    assert img.width == 6 * (128 + 4) + 4 and img.height > 48
    msg = capsys.readouterr().out
    assert "wrote" in msg
    if how[0] == "--random":
        assert "12 glyphs" in msg


def test_cli_show_counts_unrenderable_rows(db, tmp_path, capsys):
    # 66_isol includes rows whose JSON is valid but whose structure is garbage: skipped and counted
    assert main(["show", "--db", str(db), "--labels", "66_isol", "--out", str(tmp_path / "s.png")]) == 0
    assert "3 outline(s) could not be rendered (first: glyph_id " in capsys.readouterr().out


def test_cli_show_bad_input(db, tmp_path, capsys):
    cases = [
        (["--db", str(tmp_path / "none.db"), "--random", "3"], "no such file"),
        (["--db", str(db), "--fonts", "Comic Sans"], "no font matches"),
        (["--db", str(db), "--labels", "nope_isol"], "nothing to show"),
        (["--db", str(db), "--random", "0"], "at least 1"),
    ]
    for args, expected in cases:
        assert main(["show", *args, "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()
