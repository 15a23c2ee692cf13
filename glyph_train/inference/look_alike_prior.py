"""Tell look-alike characters apart by how their glyphs compare within the font: label-font's look-alike prior.

Seen one glyph at a time, O and 0, or I, l, 1 and |, or a C and a lowercase c drawn as a smaller C, are nearly
the same image, and the model tells them apart by a style an unseen font need not share (O and 0 made a quarter
of the Latin errors of BENCHMARKS.md §14u). Within one font they differ in size, and reliably: of the training
fonts, O is wider than its 0 in 94 %, l taller than its I in 85 %, C taller than its c in 99.6 %. So each glyph's
probabilities among a set of look-alikes (LOOK_ALIKES) are reweighted by how its ink box (width, top and
bottom, in em) compares with the boxes of the glyphs the model takes for the set's other characters: for
glyph i and label a, for each other label b of the set, the mean over the font's other glyphs j, weighted by
how likely j is b, of P(how i compares with j | i is a and j is b) / P(it | either way round), from a table
of such comparisons counted on the training fonts (resources/look_alikes.json, written by
bench/fit_look_alikes.py). A glyph keeps the model's total on the set: the prior says which look-alike, not
whether it is one, and every other label keeps its probability.
"""

from __future__ import annotations

import functools
import itertools
import json
from dataclasses import dataclass
from importlib.resources import files
from typing import Callable, Sequence

import numpy as np

from glyph_train.cache.raster import ink_bounds

# Sets of labels whose glyphs look alike one at a time but compare reliably within a font: the classic OCR
# confusables, and the capitals whose lowercase is the same shape drawn smaller.
LOOK_ALIKES: tuple[tuple[str, ...], ...] = (
    ("79_isol", "48_isol", "111_isol"),  # O 0 o
    ("73_isol", "108_isol", "49_isol", "124_isol"),  # I l 1 |
    ("67_isol", "99_isol"), ("83_isol", "115_isol"), ("86_isol", "118_isol"),  # C c, S s, V v
    ("87_isol", "119_isol"), ("88_isol", "120_isol"), ("90_isol", "122_isol"),  # W w, X x, Z z
)
TABLE_FILE = "look_alikes.json"
MIN_MASS = 0.01  # glyphs less likely than this to be any of a set neither move nor count as another's partner
# Glyphs compared per set, the likeliest of it: the comparisons grow with their square, and a font draws each
# look-alike a few times (accented and alternate forms: 74 at most in the 35 held-out fonts), not hundreds.
MAX_GLYPHS = 256
# A glyph with no likely partner compares as if with half a glyph that says nothing, so it keeps its
# probabilities, and one weak partner moves it only part of the way.
NO_PARTNER_WEIGHT = 0.5


def ink_box(contours: str, upem: float) -> np.ndarray:
    """(width, top, bottom) of a glyph's ink, in em."""
    x_min, y_min, x_max, y_max = ink_bounds(contours)
    return np.array([x_max - x_min, y_max, y_min]) / upem


def comparison(boxes: np.ndarray, others: np.ndarray, tolerance: float) -> np.ndarray:
    """How each of `boxes` compares with the one of `others` it broadcasts with (their last axis: width, top,
    bottom), as a cell 0..26: per size a base-3 digit, 0 larger by more than `tolerance` em, 1 within it,
    2 smaller."""
    diff = boxes - others
    digits = np.where(diff > tolerance, 0, np.where(diff >= -tolerance, 1, 2))
    return digits @ np.array([9, 3, 1])


def swapped(cells: np.ndarray) -> np.ndarray:
    """The cell of the comparison the other way round (each digit d -> 2 - d)."""
    return 26 - cells


@dataclass(frozen=True)
class ComparisonTable:
    """Per pair of look-alikes (a, b) in a set's order: how many training fonts' a compared with their b in
    each of the 27 cells (`comparison`)."""

    tolerance: float  # em
    counts: dict[tuple[str, str], np.ndarray]

    def ratio(self, a: str, b: str) -> np.ndarray | None:
        """Per cell: P(cell | i is a, j is b) / P(cell | either way round); None where the table has no count."""
        if (a, b) in self.counts:
            p = self.counts[a, b] + 0.5  # Jeffreys: a cell no font showed stays possible
        elif (b, a) in self.counts:
            p = (self.counts[b, a] + 0.5)[swapped(np.arange(27))]
        else:
            return None
        p = p / p.sum()
        return p / ((p + p[swapped(np.arange(27))]) / 2)

    def to_json(self) -> dict:
        return {"tolerance_em": self.tolerance,
                "pairs": {f"{a} {b}": c.astype(int).tolist() for (a, b), c in self.counts.items()}}

    @classmethod
    def from_json(cls, data: dict) -> ComparisonTable:
        return cls(float(data["tolerance_em"]),
                   {tuple(key.split()): np.asarray(c, dtype=np.float64) for key, c in data["pairs"].items()})


@functools.cache
def comparison_table() -> ComparisonTable:
    """The table fitted on the training fonts, shipped with the package."""
    return ComparisonTable.from_json(json.loads((files("glyph_train") / "resources" / TABLE_FILE).read_text()))


def adapt_to_look_alikes(probs: np.ndarray, label_names: Sequence[str], box: Callable[[int], np.ndarray],
                         table: ComparisonTable) -> np.ndarray:
    """probs (glyphs, labels) reweighted within each set of LOOK_ALIKES by how the glyphs' ink boxes compare
    (`box(row)`: (width, top, bottom) in em, asked only of rows likely enough to be one of a set)."""
    index = {name: j for j, name in enumerate(label_names)}
    out = probs.copy()
    boxes: dict[int, np.ndarray] = {}
    for labels in LOOK_ALIKES:
        labels = [a for a in labels if a in index]
        cols = [index[a] for a in labels]
        mass = probs[:, cols].sum(axis=1)
        rows = np.flatnonzero(mass >= MIN_MASS)
        rows = np.sort(rows[np.argsort(-mass[rows], kind="stable")[:MAX_GLYPHS]])
        if len(cols) < 2 or len(rows) < 2:
            continue
        for r in rows:
            if r not in boxes:  # rows of several sets are measured once
                boxes[r] = box(r)
        sizes = np.stack([boxes[r] for r in rows])
        cells = comparison(sizes[:, None], sizes[None], table.tolerance)  # [i, j]: i compared with j
        q = probs[np.ix_(rows, cols)]
        factor = np.ones_like(q)
        for (ai, a), (bi, b) in itertools.permutations(enumerate(labels), 2):
            ratio = table.ratio(a, b)
            if ratio is None:
                continue
            partner = np.broadcast_to(q[:, bi], cells.shape).copy()  # [i, j]: how likely j is b
            np.fill_diagonal(partner, 0.0)
            factor[:, ai] *= ((NO_PARTNER_WEIGHT + (partner * ratio[cells]).sum(axis=1))
                              / (NO_PARTNER_WEIGHT + partner.sum(axis=1)))
        moved = q * factor
        moved *= (mass[rows] / np.maximum(moved.sum(axis=1), 1e-300))[:, None]
        out[np.ix_(rows, cols)] = moved
    return out


def fit_table(fonts: Sequence[dict[str, np.ndarray]], tolerance: float) -> ComparisonTable:
    """Count, over fonts (label -> ink box), how each set's a compares with its b, for every pair (a, b) in a
    set's order that the font draws both of."""
    counts = {}
    for labels in LOOK_ALIKES:
        for a, b in itertools.combinations(labels, 2):
            cells = [int(comparison(f[a], f[b], tolerance)) for f in fonts if a in f and b in f]
            counts[a, b] = np.bincount(np.asarray(cells, dtype=np.int64), minlength=27).astype(np.float64)
    return ComparisonTable(tolerance, counts)
