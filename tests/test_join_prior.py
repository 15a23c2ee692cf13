"""label-font's join prior (inference/join_prior.py): Arabic positional forms reweighted by how glyphs join."""

from __future__ import annotations

import numpy as np
from fontfactory import fontpkg_file

from glyph_train.corpus.db import OTHER_LABEL
from glyph_train.corpus.shaping import Shaper
from glyph_train.corpus.unicode_data import FORMS
from glyph_train.inference.font_prior import KEEP
from glyph_train.inference.join_prior import adapt_to_joins, join_classes, label_forms
from glyph_train.inference.sources import shaped_form_glyph


def test_a_glyphs_join_class_says_whether_its_ink_reaches_its_origin_and_its_advance():
    """Amiri's beh, seen, lam and meem: isolated reaches neither side, initial x = 0 (where the next letter
    joins), medial both, final the advance (where the previous letter joins)."""
    shaper = Shaper(fontpkg_file("fontpkg_amiri", "Amiri-Regular.ttf").read_bytes())
    for cp in (0x0628, 0x0633, 0x0644, 0x0645):
        glyphs = [shaped_form_glyph(shaper, cp, form) for form in FORMS]
        assert join_classes(shaper, glyphs).tolist() == [0b00, 0b10, 0b11, 0b01], hex(cp)


def test_only_a_joining_letters_positional_forms_are_reweighted():
    labels = ["1580_isol", "1580_init", "1580_medi", "1580_fina", "1575_fina", "1569_isol", "65_isol", "51_numr",
              OTHER_LABEL, "logo"]
    forms = dict(zip(labels, label_forms(labels)))
    assert forms == {"1580_isol": 0, "1580_init": 1, "1580_medi": 2, "1580_fina": 3, "1575_fina": 3,
                     "1569_isol": KEEP, "65_isol": KEEP, "51_numr": KEEP, OTHER_LABEL: KEEP, "logo": KEEP}


def test_a_font_whose_finals_reach_the_advance_makes_a_glyph_that_stops_short_isolated():
    """Kufam-like: the model reads its jeem's final (which reaches the advance) as well as its other finals, but
    takes one isolated glyph, which stops short of the advance, for a final. Within its join class the font's
    glyphs are isolated forms, so EM turns it back; the Latin label's share of every glyph is untouched."""
    labels = ["1580_isol", "1580_fina", "65_isol"]
    rng = np.random.default_rng(0)
    isolated = np.tile([0.90, 0.05, 0.05], (20, 1)) + rng.uniform(0, 0.02, (20, 3))
    final = np.tile([0.05, 0.90, 0.05], (20, 1)) + rng.uniform(0, 0.02, (20, 3))
    confused = np.array([[0.35, 0.55, 0.10]])
    probs = np.concatenate([isolated, final, confused])
    probs /= probs.sum(axis=1, keepdims=True)
    classes = np.array([0b00] * 20 + [0b01] * 20 + [0b00])
    adapted = adapt_to_joins(probs, label_forms(labels), classes)
    assert probs[-1].argmax() == 1 and adapted[-1].argmax() == 0
    assert (adapted[:40].argmax(axis=1) == probs[:40].argmax(axis=1)).all()
    np.testing.assert_allclose(adapted[:, 2], probs[:, 2], rtol=1e-9)
    np.testing.assert_allclose(adapted.sum(axis=1), 1.0)
