"""The per-font script prior (inference/font_prior.py): EM over one font's glyphs."""

from __future__ import annotations

import numpy as np

from glyph_train.corpus.db import OTHER_LABEL
from glyph_train.inference.font_prior import COMMON, KEEP, adapt_to_font, label_scripts

# I, l, alef, lam, zero, Arabic-Indic one, period, the other class, a label outside the convention
LABELS = ["73_isol", "108_isol", "1575_isol", "1604_init", "48_isol", "1633_isol", "46_isol", OTHER_LABEL, "logo"]


def test_labels_group_by_the_script_of_their_letters():
    groups, names = label_scripts(LABELS, other=LABELS.index(OTHER_LABEL))
    script = {label: names[g] if g != KEEP else None for label, g in zip(LABELS, groups)}
    assert script == {"73_isol": "LATIN", "108_isol": "LATIN", "1575_isol": "ARABIC", "1604_init": "ARABIC",
                      "48_isol": COMMON, "1633_isol": "ARABIC", "46_isol": COMMON, OTHER_LABEL: None, "logo": None}


def test_a_labels_script_is_its_unicode_script_not_the_first_word_of_its_name():
    """Persian one (EXTENDED ARABIC-INDIC DIGIT ONE), drawn like an I, was COMMON and kept its weight in Latin
    fonts; ª and º made scripts of their own (FEMININE, MASCULINE) and µ one (MICRO)."""
    labels = ["73_isol", "1575_isol", "1777_isol", "170_isol", "186_isol", "181_isol", "1548_isol", "1611_isol"]
    groups, names = label_scripts(labels, other=None)
    assert dict(zip(labels, (names[g] for g in groups))) == {
        "73_isol": "LATIN", "1575_isol": "ARABIC", "1777_isol": "ARABIC", "170_isol": "LATIN", "186_isol": "LATIN",
        "181_isol": COMMON,
        "1548_isol": "ARABIC", "1611_isol": "ARABIC"}  # ، and fathatan: Common and Inherited, named ARABIC


def latin_font(rng: np.random.Generator, glyphs: int = 60) -> np.ndarray:
    """Probabilities over LABELS for a Latin font: most glyphs clearly I, l, zero or period, a few none of the
    labels (mass on the other class), and glyph 0 an I the model finds slightly more alef-like."""
    probs = np.full((glyphs, len(LABELS)), 0.01)
    for row in range(glyphs):
        probs[row, rng.choice([0, 1, 4, 6, 7])] = 0.9
    probs[0] = [0.4, 0.05, 0.45, 0.02, 0.02, 0.02, 0.02, 0.01, 0.01]
    return probs / probs.sum(axis=1, keepdims=True)


def test_a_latin_font_fades_arabic_labels_and_keeps_the_other_class_share():
    probs = latin_font(np.random.default_rng(0))
    groups, names = label_scripts(LABELS, other=LABELS.index(OTHER_LABEL))
    adapted, shares = adapt_to_font(probs, groups)
    share = dict(zip(names, shares))
    assert share["ARABIC"] < 0.01 < share["LATIN"]
    assert adapted[0].argmax() == LABELS.index("73_isol")  # the I is an I in a Latin font
    assert np.allclose(adapted.sum(axis=1), 1.0)
    assert np.isclose(shares.sum(), 7 / 9)  # the other class and "logo" keep their trained prior, 2 of 9 classes
    # rows the other class dominates stay dominated by it: its weight is the trained one
    other_rows = probs.argmax(axis=1) == LABELS.index(OTHER_LABEL)
    assert (adapted[other_rows].argmax(axis=1) == LABELS.index(OTHER_LABEL)).all()


def test_one_script_only_leaves_the_probabilities_as_they_were():
    labels = ["65_isol", "66_isol", "67_isol"]
    probs = np.random.default_rng(1).dirichlet(np.ones(3), size=20)
    groups, names = label_scripts(labels, other=None)
    assert names == ["LATIN"]
    adapted, shares = adapt_to_font(probs, groups)
    assert np.allclose(adapted, probs) and np.allclose(shares, [1.0])


def test_no_glyphs_or_no_groups_is_a_no_op():
    groups, _ = label_scripts(["logo", OTHER_LABEL], other=1)
    probs = np.full((3, 2), 0.5)
    assert adapt_to_font(probs, groups)[0] is probs
    assert adapt_to_font(np.zeros((0, 2)), groups)[0].shape == (0, 2)
