"""Test helper: small real fonts made from installed fontpkg fonts, and broken copies of them.

`subset_font` keeps a few characters (with their positional forms: the GSUB init/medi/fina/isol features
survive subsetting) so inference tests run on a few dozen glyphs. `strip_font` makes the font label-font
exists for: no cmap subtables, no GSUB, every glyph renamed glyphNNNNN (post format 3 with no cmap to
name them from), glyph ids unchanged.
"""

from __future__ import annotations

import importlib
import io
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTFont


def fontpkg_file(package: str, name: str) -> Path:
    return Path(importlib.import_module(package).__file__).parent / "files" / name


def subset_font(src: Path, out: Path, text: str,
                features: tuple[str, ...] = ("init", "medi", "fina", "isol")) -> Path:
    options = subset.Options()
    options.layout_features = list(features)
    options.name_IDs = ["*"]
    options.notdef_outline = True
    font = TTFont(src)
    sub = subset.Subsetter(options)
    sub.populate(text=text)
    sub.subset(font)
    font.save(out)
    return out


def strip_font(src: Path, out: Path) -> Path:
    font = TTFont(src)
    for table in ("GSUB", "morx"):
        if table in font:
            del font[table]
    font["cmap"].tables = []
    font["post"].formatType = 3.0
    buf = io.BytesIO()
    font.save(buf)
    Path(out).write_bytes(buf.getvalue())
    return Path(out)
