"""The index side of the app: what the character grid and the family picker offer, searches by character or
by an indexed glyph (glyph_train.inference.search does the work), and an indexed glyph's picture.

Everything sized by the index (1M rows) stays here; pages get k results, a grid of the distinct
characters and at most a few dozen family names per request."""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc

from glyph_train.errors import GlyphTrainError
from glyph_train.inference.index import GlyphIndex, load_index
from glyph_train.inference.search import char_query, search
from glyph_train.raster import EmBox
from glyph_train.serve.images import PngCache, glyph_png
from glyph_train.unicode_data import FORMS

LABEL = re.compile(r"^(\d+)_(\w+)$")
MAX_K = 100


@dataclass(frozen=True)
class GridChar:
    char: str
    cp: int
    forms: tuple[str, ...]  # the positional forms the index has a glyph (known or predicted) for


def char_name(cp: int) -> str:
    return unicodedata.name(chr(cp), f"U+{cp:04X}")


def describe_label(label: str) -> str:
    """'1576_init' -> 'ب U+0628 ARABIC LETTER BEH, init' (labels that are not {cp}_{form} stay as they are)."""
    m = LABEL.match(label or "")
    if not m or int(m.group(1)) > 0x10FFFF:
        return label
    cp = int(m.group(1))
    ch = chr(cp) if unicodedata.category(chr(cp))[0] not in "CZ" else ""
    return f"{ch} U+{cp:04X} {char_name(cp)}, {m.group(2)}".strip()


def short_label(label: str) -> str:
    """'1576_init' -> 'ب init' for cramped places (the full description goes in a tooltip)."""
    m = LABEL.match(label or "")
    if not m or int(m.group(1)) > 0x10FFFF or unicodedata.category(chr(int(m.group(1))))[0] in "CZ":
        return label
    return f"{chr(int(m.group(1)))} {m.group(2)}"


class Catalog:
    def __init__(self, index_dir: Path, images: PngCache) -> None:
        self.index_dir = Path(index_dir)
        self.gi: GlyphIndex = load_index(self.index_dir)
        self.gi.info.setdefault("path", str(self.index_dir))
        self.fit = str(self.gi.info.get("fit", "tight"))
        self.images = images
        self.grid = _grid(self.gi)
        self.families = sorted({f for f in pc.unique(self.gi.table.column("family")).to_pylist() if f})

    def __len__(self) -> int:
        return len(self.gi.table)

    def grid_groups(self) -> list[tuple[str, list[GridChar]]]:
        groups: dict[str, list[GridChar]] = defaultdict(list)
        for g in self.grid:
            groups[char_name(g.cp).split(" ")[0].title()].append(g)
        return sorted(groups.items(), key=lambda kv: kv[1][0].cp)

    def families_matching(self, text: str, limit: int = 20) -> list[str]:
        t = text.strip().lower()
        starts = [f for f in self.families if f.lower().startswith(t)]
        inside = [f for f in self.families if t in f.lower() and not f.lower().startswith(t)]
        return (starts + inside)[:limit]

    def row(self, row: int) -> dict:
        if not 0 <= row < len(self.gi.table):
            raise GlyphTrainError(f"no glyph {row} in this index (it has {len(self.gi.table):,})")
        return self.gi.table.slice(row, 1).to_pylist()[0]

    def search_char(self, char: str, form: str, family: str | None, k: int) -> tuple[dict, list[dict]]:
        if form not in FORMS:
            raise GlyphTrainError(f"form {form!r}: choose one of {', '.join(FORMS)}")
        try:
            query = char_query(self.gi, char, form, family or None)
        except GlyphTrainError as err:  # search's messages name its command-line flags
            raise GlyphTrainError(str(err).replace("--char ", "character ", 1)) from None
        return self._describe(query), search(self.gi, query["vector"], _k(k), exclude_row=query.get("row"))

    def search_row(self, row: int, k: int) -> tuple[dict, list[dict]]:
        meta = self.row(row)
        query = {"describe": {"kind": "glyph", "family": meta["family"], "style": meta["style"],
                              "glyph": meta["glyph"] or str(meta["glyph_id"]),
                              "label": meta["label"] or meta["predicted_label"]}, "row": row}
        vector = self.gi.vectors([meta["vector"]])[0]
        return self._describe(query), search(self.gi, vector, _k(k), exclude_row=row)

    def _describe(self, query: dict) -> dict:
        d = dict(query["describe"])
        d["row"] = query.get("row")
        d["label_text"] = describe_label(d.get("label", ""))
        return d

    def image(self, row: int) -> bytes:
        meta = self.row(row)
        return self.images.get(("index", row), lambda: glyph_png(_contours(meta), self.fit,
                                                                 EmBox(meta["upem"], meta["ascent"], meta["descent"])))


def _k(k: int) -> int:
    return max(1, min(int(k), MAX_K))


def _contours(meta: dict) -> str | None:
    """The indexed glyph's outline, read again from the font file or glyphs.db the index names."""
    from glyph_train.inference.sources import read_contours

    return read_contours(meta["source"], meta["font_file"], meta["face_index"], meta["instance"], meta["glyph_id"],
                         Path(meta["db"]) if meta["db"] else None)


def _grid(gi: GlyphIndex) -> list[GridChar]:
    """The characters the index has glyphs for, by known label or else predicted label."""
    forms: dict[int, set[str]] = defaultdict(set)
    for column in ("label", "predicted_label"):
        for label in pc.unique(gi.table.column(column)).to_pylist():
            m = LABEL.match(label or "")
            if m and int(m.group(1)) <= 0x10FFFF and m.group(2) in FORMS:
                forms[int(m.group(1))].add(m.group(2))
    out = []
    for cp in sorted(forms):
        ch = chr(cp)
        if unicodedata.category(ch)[0] in "CZ":
            continue
        out.append(GridChar(ch, cp, tuple(f for f in FORMS if f in forms[cp])))
    return out
