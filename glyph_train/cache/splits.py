"""Train/validation splits of a glyph selection, deterministic from the seed.

`font` (default): whole font families go to one side, so validation measures generalisation to unseen
typefaces rather than to another weight of a font the model trained on. Families are held out within
each script stratum (the set of scripts a family covers), so every script with 2+ families is validated. Families are grouped by a key
that also strips trailing style words, because DBs built from static fonts often name the family of a
weight "Roboto Light" (legacy name ID 1) and that must not leak "Roboto" across the split.
`stratified`: per label, a val_frac share goes to validation, always leaving at least one in train.
Either way, validation rows whose label has no train row are dropped (the classifier cannot know them).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from glyph_train.corpus.db import GlyphMeta
from glyph_train.corpus.font_rows import family_key
from glyph_train.errors import GlyphTrainError
from glyph_train.flags import Flag

SPLITS = ("font", "stratified")
SPLIT_FLAG = Flag("--split", "font: hold out whole families; stratified: per label", "font", choices=SPLITS)
VAL_FRAC_FLAG = Flag("--val-frac", "share of the glyphs held out for validation", 0.1, type=float)
SPLIT_VERSION = 2  # bump when an algorithm changes: it is part of the cache fingerprint
_SCRIPTS = {"arabic", "latin", "greek", "cyrillic"}
@dataclass
class SplitResult:
    method: str
    train: list[int]  # indices into the selection's glyph list, ascending
    validation: list[int]
    val_families: list[str] = field(default_factory=list)  # family keys held out (font split)
    dropped_val_rows: int = 0  # validation rows whose label is absent from train
    dropped_val_labels: int = 0

    def summary(self) -> str:
        line = f"split {self.method}: {len(self.train):,} train / {len(self.validation):,} validation"
        if self.method == "font":
            line += f" ({len(self.val_families)} held-out famil{'y' if len(self.val_families) == 1 else 'ies'})"
        if self.dropped_val_rows:
            line += (f"; dropped {self.dropped_val_rows:,} validation rows of {self.dropped_val_labels} "
                     "label(s) absent from train")
        return line


def split_glyphs(glyphs: Sequence[GlyphMeta], method: str = "font", val_frac: float = 0.1,
                 seed: int = 0) -> SplitResult:
    if method not in SPLITS:
        raise GlyphTrainError(f"--split must be one of {', '.join(SPLITS)}, got {method!r}")
    if not 0.0 <= val_frac < 1.0:
        raise GlyphTrainError(f"--val-frac must be in [0, 1), got {val_frac}")
    rng = np.random.default_rng([seed, 0x5EED])
    if method == "font":
        train, val, held = _font_split(glyphs, val_frac, rng)
    else:
        train, val, held = _stratified_split(glyphs, val_frac, rng)
    train_labels = {glyphs[i].label for i in train}
    dropped = [i for i in val if glyphs[i].label not in train_labels]
    if dropped:
        val = [i for i in val if glyphs[i].label in train_labels]
    return SplitResult(method, sorted(train), sorted(val), held, len(dropped),
                       len({glyphs[i].label for i in dropped}))


def _font_split(glyphs: Sequence[GlyphMeta], val_frac: float, rng: np.random.Generator):
    groups: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(glyphs):
        groups[family_key(g.family)].append(i)
    if val_frac == 0.0:
        return list(range(len(glyphs))), [], []
    if len(groups) < 2:
        only = next(iter(groups), "?")
        raise GlyphTrainError(f"--split font needs at least 2 font families, the selection has only {only!r}; "
                              "use --split stratified")
    # Hold out families within each script stratum, so validation covers Arabic even though Arabic
    # families are a small minority of the corpus (a plain draw over 58 families often picks none).
    strata: dict[str, list[str]] = defaultdict(list)
    for fam in sorted(groups):
        strata[_scripts(glyphs, groups[fam])].append(fam)
    held: list[str] = []
    for key in sorted(strata):
        fams = strata[key]
        if len(fams) > 1 or len(strata) == 1:
            held += _hold_out(fams, groups, val_frac, rng)
    if not held:  # every stratum is a single family: hold out the smallest family
        held = [min(groups, key=lambda f: len(groups[f]))]
    held_set = set(held)
    val = [i for fam in held for i in groups[fam]]
    train = [i for fam, idx in groups.items() if fam not in held_set for i in idx]
    return train, val, sorted(held)


def _scripts(glyphs: Sequence[GlyphMeta], idx: list[int]) -> str:
    """The scripts a family covers ('arabic+latin', 'latin', ...); digits and symbols don't count."""
    found = {glyphs[i].char_class for i in idx} & _SCRIPTS
    return "+".join(sorted(found)) or "other"


def _hold_out(fams: list[str], groups: dict[str, list[int]], val_frac: float, rng: np.random.Generator) -> list[str]:
    """Walk the families in seeded order, taking one whenever it brings the held-out size closer to
    val_frac of the stratum; never all of them, never none."""
    target = val_frac * sum(len(groups[f]) for f in fams)
    held: list[str] = []
    n_val = 0
    for fam in [fams[k] for k in rng.permutation(len(fams))]:
        size = len(groups[fam])
        if abs(n_val + size - target) < abs(n_val - target):
            held.append(fam)
            n_val += size
    if not held:
        held = [min(fams, key=lambda f: len(groups[f]))]
    if len(held) == len(fams):
        held.pop()
    return held


def _stratified_split(glyphs: Sequence[GlyphMeta], val_frac: float, rng: np.random.Generator):
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(glyphs):
        by_label[g.label].append(i)
    train: list[int] = []
    val: list[int] = []
    for label in sorted(by_label):
        idx = by_label[label]
        # Randomised rounding: small labels still reach val_frac on average instead of always rounding to 0.
        n_val = min(len(idx) - 1, int(len(idx) * val_frac + rng.random()))
        perm = rng.permutation(len(idx))
        val.extend(idx[k] for k in perm[:n_val])
        train.extend(idx[k] for k in perm[n_val:])
    return train, val, []
