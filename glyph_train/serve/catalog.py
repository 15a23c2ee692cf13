"""The index side of the app: what the character grid and the family picker offer, searches by character or
by an indexed glyph (glyph_train.inference.search does the work), and an indexed glyph's picture.

Everything sized by the index (1M rows) stays here; pages get k results, a grid of the distinct
characters and at most a few dozen family names per request. The queries mean what `glyph-train search`'s
do (char_query / search in glyph_train.inference.search), answered from columns encoded once at start-up
(integer codes per label, family and style; rows ordered by vector) so a request never scans 1M strings."""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from glyph_train.corpus.font_rows import EmBox
from glyph_train.corpus.unicode_data import LABEL_FORMS
from glyph_train.errors import GlyphTrainError
from glyph_train.inference.index import GlyphIndex, load_index
from glyph_train.inference.search import parse_char
from glyph_train.serve.images import PngCache, glyph_png

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


def label_parts(label: str) -> tuple[str, str]:
    """'1576_init' -> ('ب', 'init') for cramped places (the full description goes in a tooltip); a label
    that names no printable character -> ('', label)."""
    m = LABEL.match(label or "")
    if not m or int(m.group(1)) > 0x10FFFF or unicodedata.category(chr(int(m.group(1))))[0] in "CZ":
        return "", label or ""
    return chr(int(m.group(1))), m.group(2)


class Catalog:
    def __init__(self, index_dir: Path, images: PngCache) -> None:
        self.index_dir = Path(index_dir)
        self.gi: GlyphIndex = load_index(self.index_dir)
        self.gi.info.setdefault("path", str(self.index_dir))
        self.fit = str(self.gi.info.get("fit", "tight"))
        self.images = images
        self.grid = _grid(self.gi)
        self.codes = {name: _Codes(self.gi.table.column(name)) for name in ("label", "predicted_label", "family", "style")}
        self.families = sorted(f for f in self.codes["family"].values if f)
        self._vectors = self.gi.column("vector")  # row -> its outline's vector id
        self._by_vector = np.argsort(self._vectors, kind="stable")  # rows sharing a vector, found by bisection
        self._sorted_vectors = self._vectors[self._by_vector]

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
        """As search.char_query: with a family, that family's glyph (its Regular style first) is the query;
        without, the normalised mean of every glyph known (else predicted) to be the label."""
        if form not in LABEL_FORMS:
            raise GlyphTrainError(f"form {form!r}: choose one of {', '.join(LABEL_FORMS)}")
        try:
            cp = parse_char(char)
        except GlyphTrainError:
            raise GlyphTrainError(f"character {char!r}: give one character or U+XXXX") from None
        label = f"{cp}_{form}"
        known = self.codes["label"].mask([label])
        mask = known if known.any() else self.codes["predicted_label"].mask([label])
        if not mask.any():
            raise GlyphTrainError(f"no glyph labelled or predicted {label} (U+{cp:04X} {form}) in this index")
        describe = {"kind": "char", "char": chr(cp), "label": label, "form": form,
                    "matched_by": "label" if known.any() else "predicted_label"}
        if family:
            rows = np.nonzero(mask & self._family_mask(family))[0]
            if not len(rows):
                with_label = sorted({self.codes["family"].values[c] for c in np.unique(self.codes["family"].codes[mask])[:11]})
                raise GlyphTrainError(f"no {label} glyph in family {family!r}; families with one: {', '.join(with_label[:10])}"
                                      + (", ..." if len(with_label) > 10 else ""))
            regular = self.codes["style"].mask(["Regular"])[rows]
            row = int(rows[np.argmax(regular)]) if regular.any() else int(rows[0])
            return self.search_row(row, k, describe)
        vectors = self.gi.vectors(np.unique(self._vectors[mask])[:10_000])
        mean = vectors.mean(axis=0)
        describe["glyphs_averaged"] = int(mask.sum())
        describe["row"] = None
        describe["label_text"] = describe_label(label)
        return describe, self.search(mean / max(float(np.linalg.norm(mean)), 1e-12), _k(k))

    def search_row(self, row: int, k: int, describe: dict | None = None) -> tuple[dict, list[dict]]:
        """The indexed glyph `row` is the query; it is left out of its own results."""
        meta = self.row(row)
        d = dict(describe or {"kind": "glyph", "label": meta["label"] or meta["predicted_label"]})
        d |= {"family": meta["family"], "style": meta["style"], "font": meta["font_file"],
              "glyph": meta["glyph"] or str(meta["glyph_id"]), "row": row}
        d["label_text"] = describe_label(d.get("label", ""))
        return d, self.search(self.gi.vectors([meta["vector"]])[0], _k(k), exclude_row=row)

    def search(self, vector: np.ndarray, k: int, exclude_row: int | None = None) -> list[dict]:
        """search.search's results (rank, score, family, style, font, glyph, label, predicted_label, confidence,
        row): the top-k rows by their vector's similarity, rows sharing a vector sharing its score."""
        results: list[tuple[float, int]] = []
        want = k + 1
        while True:
            scores, ids = self.gi.search(vector[None], want)
            results = []
            for score, vid in zip(scores[0], ids[0]):
                if vid < 0:
                    continue
                lo, hi = np.searchsorted(self._sorted_vectors, [vid, vid + 1])
                results += [(float(score), int(r)) for r in self._by_vector[lo:hi] if r != exclude_row]
            if len(results) >= k or want >= self.gi.index.ntotal:
                break
            want = min(self.gi.index.ntotal, want * 4)
        out = []
        for rank, (score, row) in enumerate(results[:k], 1):
            meta = self.row(row)
            out.append({"rank": rank, "score": round(score, 6), "family": meta["family"], "style": meta["style"],
                        "font": meta["font_file"] or meta["font"], "glyph": meta["glyph"] or str(meta["glyph_id"]),
                        "label": meta["label"] or None, "predicted_label": meta["predicted_label"],
                        "confidence": round(float(meta["confidence"]), 6), "row": row})
        return out

    def _family_mask(self, text: str) -> np.ndarray:
        """Rows of family `text`, or of 'Family Style' (case-insensitive)."""
        t = text.strip().lower()
        mask = self.codes["family"].mask([f for f in self.codes["family"].values if f.lower() == t])
        words = t.split(" ")
        for i in range(1, len(words)):
            fam, style = " ".join(words[:i]), " ".join(words[i:])
            fams = [f for f in self.codes["family"].values if f.lower() == fam]
            styles = [s for s in self.codes["style"].values if s.lower() == style]
            if fams and styles:
                mask |= self.codes["family"].mask(fams) & self.codes["style"].mask(styles)
        return mask

    def image(self, row: int) -> bytes:
        meta = self.row(row)
        return self.images.get(("index", row), lambda: glyph_png(_contours(meta), self.fit,
                                                                 EmBox(meta["upem"], meta["ascent"], meta["descent"])))


def _k(k: int) -> int:
    return max(1, min(int(k), MAX_K))


class _Codes:
    """A string column as integer codes into its distinct values, for fast equality masks."""

    def __init__(self, column: pa.ChunkedArray) -> None:
        encoded = pc.dictionary_encode(column.fill_null("")).combine_chunks()
        self.values: list[str] = encoded.dictionary.to_pylist()
        self.codes = encoded.indices.to_numpy(zero_copy_only=False)
        self._code = {v: i for i, v in enumerate(self.values)}

    def mask(self, values: list[str]) -> np.ndarray:
        wanted = [self._code[v] for v in values if v in self._code]
        if not wanted:
            return np.zeros(len(self.codes), bool)
        return self.codes == wanted[0] if len(wanted) == 1 else np.isin(self.codes, wanted)


_SHAPER_LOCK = threading.Lock()


@functools.lru_cache(maxsize=16)
def _shaper(font_file: str, face_index: int, instance: str):
    """One parsed face per indexed font file, kept while its glyphs are being shown (a results page draws
    many glyphs of few fonts)."""
    from glyph_train.corpus.fonts import sfnt_data
    from glyph_train.corpus.shaping import Shaper

    coords = {k: float(v) for k, v in (p.split("=") for p in instance.split(",") if p)}
    return Shaper(sfnt_data(Path(font_file)), face_index, coords)


def _contours(meta: dict) -> str | None:
    """The indexed glyph's outline, read again from the font file or glyphs.db the index names."""
    from glyph_train.inference.sources import read_contours

    if meta["source"] == "font":
        try:
            with _SHAPER_LOCK:
                return _shaper(meta["font_file"], meta["face_index"], meta["instance"]).glyph_outline(meta["glyph_id"]) or None
        except (OSError, GlyphTrainError, ValueError):
            return None  # the font file moved or changed since it was indexed: an empty picture
    return read_contours(meta["source"], meta["font_file"], meta["face_index"], meta["instance"], meta["glyph_id"],
                         Path(meta["db"]) if meta["db"] else None)


def _grid(gi: GlyphIndex) -> list[GridChar]:
    """The characters the index has glyphs for, by known label or else predicted label."""
    forms: dict[int, set[str]] = defaultdict(set)
    for column in ("label", "predicted_label"):
        for label in pc.unique(gi.table.column(column)).to_pylist():
            m = LABEL.match(label or "")
            if m and int(m.group(1)) <= 0x10FFFF and m.group(2) in LABEL_FORMS:
                forms[int(m.group(1))].add(m.group(2))
    out = []
    for cp in sorted(forms):
        ch = chr(cp)
        if unicodedata.category(ch)[0] in "CZ":
            continue
        out.append(GridChar(ch, cp, tuple(f for f in LABEL_FORMS if f in forms[cp])))
    return out
