"""Adapt the model's probabilities to the scripts one font draws (Saerens, Latinne & Decaestecker 2002, "Adjusting
the outputs of a classifier to new a priori probabilities").

The model learns every script's labels as equally likely, but a font draws one or two scripts, and a glyph
that looks like a letter of another script (Latin I and Arabic alef, g and waw) can take that letter's label.
EM estimates each script's share of the font's glyphs from the model's own probabilities over the whole font
and reweights every glyph's probabilities by it: in a Latin font the Arabic labels fade, and the other way round.

Groups are scripts: a label's Unicode Script property (fontTools.unicodedata; LATIN, ARABIC, CYRILLIC, ...), so
ª is Latin and the Extended Arabic-Indic digits (Persian ۱, drawn like an I) are Arabic. Characters of every
script (Common, Inherited: digits, punctuation, symbols, harakat) go by the first word of their Unicode name
where it names a script of the labels (ARABIC COMMA, ARABIC TATWEEL), else COMMON. The other class
(--others-per-label) keeps its trained share: re-estimating it too lowered held-out argmax accuracy by 6 points
(BENCHMARKS.md §14f), since its probability is not calibrated for real letters of unfamiliar styles. Labels that
are not `{code point}_{form}` keep theirs as well (labels are opaque beyond that convention).
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np
from fontTools import unicodedata as scripts

COMMON = "COMMON"
KEEP = -1  # group of labels whose share is not re-estimated


def code_point(label: str) -> int | None:
    """The code point a `{code point}_{form}` label names; None for labels outside that convention."""
    head = label.split("_", 1)[0]
    return int(head) if head.isdigit() and int(head) <= 0x10FFFF else None


_OF_EVERY_SCRIPT = {"Zyyy", "Zinh", "Zzzz"}  # Common, Inherited, Unknown


def _script(cp: int) -> str | None:
    """The code point's script in upper case (LATIN), or None for Common, Inherited and Unknown."""
    code = scripts.script(chr(cp))
    return None if code in _OF_EVERY_SCRIPT else scripts.script_name(code).upper()


def label_scripts(label_names: list[str], other: int | None) -> tuple[np.ndarray, list[str]]:
    """(group index per label, KEEP for the other class and unparsed labels; the groups' names)."""
    cps = {j: cp for j, name in enumerate(label_names) if j != other and (cp := code_point(name)) is not None}
    script = {j: _script(cp) for j, cp in cps.items()}
    named = set(script.values()) - {None}
    names: list[str] = []
    groups = np.full(len(label_names), KEEP, dtype=np.int64)
    for j, cp in cps.items():
        if script[j] is None:
            word = re.split(r"[ -]", unicodedata.name(chr(cp), ""))[0]
            script[j] = word if word in named else COMMON
        if script[j] not in names:
            names.append(script[j])
        groups[j] = names.index(script[j])
    return groups, names


def adapt_to_font(probs: np.ndarray, groups: np.ndarray, iterations: int = 100,
                  tolerance: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """EM: each group's share of the font's glyphs, and every glyph's probabilities reweighted by
    share / trained share (the model's classes were equally likely: a group's trained share is its size).
    KEEP labels keep their total share. Returns (probabilities, shares per group)."""
    num_groups = int(groups.max()) + 1 if len(groups) and groups.max() >= 0 else 0
    if len(probs) == 0 or num_groups == 0:
        return probs, np.zeros(num_groups)
    adapted = groups >= 0
    trained = np.bincount(groups[adapted], minlength=num_groups) / len(groups)
    onehot = np.zeros((len(groups), num_groups))
    onehot[np.flatnonzero(adapted), groups[adapted]] = 1.0
    # EM needs each glyph's mass per group, not per label: iterate on (glyphs, groups), reweight labels once
    grouped, kept = probs @ onehot, probs[:, ~adapted].sum(axis=1)
    share = trained.copy()
    for _ in range(iterations):
        weighted = grouped * (share / trained)
        mass = (weighted / (weighted.sum(axis=1) + kept)[:, None]).mean(axis=0)
        new = mass * trained.sum() / mass.sum()  # the adapted groups keep their total (KEEP labels theirs)
        done = np.abs(new - share).max() < tolerance
        share = np.maximum(new, 1e-12)
        if done:
            break
    weight = np.ones(len(groups))
    weight[adapted] = (share / trained)[groups[adapted]]
    out = probs * weight
    return out / out.sum(axis=1, keepdims=True), share
