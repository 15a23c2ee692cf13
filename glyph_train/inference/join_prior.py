"""Adapt the model's Arabic positional forms to how the font's glyphs join: label-font's join prior.

An Arabic letter joins the letter after it (on its left) at its origin and the letter before it (on its right)
at its advance: initial and medial forms draw a stroke to x = 0, medial and final ones to the advance, isolated
ones to neither. The model reads an outline without its advance (the glyphs.db it learns from has none), and in
styles far from its training it takes a final jeem for the isolated one or a medial for the initial (40 of the
134 Arabic errors of BENCHMARKS.md §14u). Fonts bend the rule (cursive attachment moves the joins of nastaliq
and ruqaa; Lemonada's strokes stop short of the advance), so it is learnt per font, not imposed: each glyph
falls in one of four join classes (its ink reaches x = 0 or not, reaches its advance or not), and within each
class EM estimates each positional form's share (font_prior.adapt_to_font over the class's glyphs, the forms as
groups). A font that draws its finals to the advance thus makes "final" unlikely for the glyphs that stop short
of it. Every other label (Latin, digits, non-joining letters, the other class) keeps its share.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from glyph_train.corpus.shaping import Shaper
from glyph_train.corpus.unicode_data import FORMS, forms_for
from glyph_train.inference.font_prior import KEEP, adapt_to_font, code_point

JOIN_CLASSES = 4  # 2 * (ink reaches x = 0) + (ink reaches the advance)


def join_classes(shaper: Shaper, glyph_ids: Sequence[int]) -> np.ndarray:
    """Each glyph's join class, from its ink's horizontal extent and its advance (font units, HarfBuzz)."""
    out = np.zeros(len(glyph_ids), dtype=np.int64)
    for i, gid in enumerate(glyph_ids):
        extents = shaper.font.get_glyph_extents(gid)
        if extents is None:  # draws nothing: no joins
            continue
        left, right = extents.x_bearing, extents.x_bearing + extents.width
        out[i] = 2 * (left <= 0) + (right >= shaper.font.get_glyph_h_advance(gid))
    return out


def label_forms(label_names: list[str]) -> np.ndarray:
    """Per label: the index in FORMS of a joining letter's positional form (`1580_fina`), else KEEP."""
    forms = np.full(len(label_names), KEEP, dtype=np.int64)
    for j, name in enumerate(label_names):
        cp, form = code_point(name), name.rpartition("_")[2]
        if cp is not None and len(forms_for(cp)) > 1 and form in FORMS:
            forms[j] = FORMS.index(form)
    return forms


def adapt_to_joins(probs: np.ndarray, forms: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """probs reweighted, within each join class, by the positional forms' shares among its glyphs (EM)."""
    groups = forms.copy()  # numbered 0.. over the forms the labels have (an export may lack medial forms)
    groups[forms >= 0] = np.unique(forms[forms >= 0], return_inverse=True)[1]
    out = probs.copy()
    for c in range(JOIN_CLASSES):
        rows = np.flatnonzero(classes == c)
        if len(rows):
            out[rows] = adapt_to_font(probs[rows], groups)[0]
    # which form, not whether a form: each glyph keeps the model's total on the forms and on every other label
    formed, kept = forms >= 0, forms < 0
    out[:, formed] *= (probs[:, formed].sum(axis=1, keepdims=True)
                       / np.maximum(out[:, formed].sum(axis=1, keepdims=True), 1e-300))
    out[:, kept] = probs[:, kept]
    return out
