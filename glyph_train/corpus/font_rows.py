"""What a `fonts` row says about its glyphs beyond its columns: the box they are drawn in and the family
they belong to.

The em box (font units, y up) is what `fit="em"` renders against; a family groups a typeface's styles, so
that the font split (cache/splits.py) keeps every style of a family on one side.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FONT_FILE_SUFFIX = re.compile(r"\.(ttf|otf|ttc|otc|woff2?|dfont|pf[ab])$", re.IGNORECASE)
AXES_TAG = re.compile(r"\[[^\]]*\]")  # Roboto[wdth,wght].ttf: a variable font's axes
_STYLE_WORDS = {  # dropped from the end of a family name by family_key
    "thin", "hairline", "extralight", "ultralight", "light", "book", "regular", "normal", "medium", "semibold",
    "demibold", "bold", "extrabold", "ultrabold", "black", "heavy", "italic", "oblique", "condensed",
    "semicondensed", "extracondensed", "expanded", "semiexpanded", "narrow", "wide", "extra", "ultra", "semi",
    "demi",
}


@dataclass(frozen=True)
class EmBox:
    """The font's vertical extent in font units; descent is negative (below the baseline)."""

    upem: float
    ascent: float
    descent: float


def em_box_from_metrics(
    upem: float | None,
    ascent: float | None,
    descent: float | None,
    typo_ascent: float | None = None,
    typo_descent: float | None = None,
) -> EmBox:
    """EmBox from a fonts row: OS/2 typo metrics when set (they are meant for layout), else hhea, else 0.8/-0.2 em."""
    upem = _positive(upem) or 1000.0
    for a, d in ((typo_ascent, typo_descent), (ascent, descent)):
        a, d = _positive(a), _number(d)
        if a and d is not None and a + abs(d) > 0:  # a descent of 0 is real (e.g. pixel fonts), not missing
            # Some fonts store the descender as a positive magnitude: normalise to below-baseline.
            return EmBox(upem, a, -abs(d))
    return EmBox(upem, upem * 0.8, -upem * 0.2)


def _number(value: Any) -> float | None:
    """A metric as float; None when missing or not a number (DB columns may hold NULL or TEXT)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _positive(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and number > 0 else None


def family_from_file_name(file_name: str | None) -> str | None:
    """The family a font file's name implies: the part before the first hyphen, without extension or
    variable-font axes: Amiri-Bold.ttf -> Amiri, Roboto[wdth,wght].ttf -> Roboto,
    NotoSansArabic-Regular.otf -> NotoSansArabic. (Trailing style words are dropped later by family_key.)"""
    if not file_name:
        return None
    stem = AXES_TAG.sub("", FONT_FILE_SUFFIX.sub("", Path(str(file_name)).name))
    family = stem.split("-", 1)[0].strip(" _")
    return family or None


def family_key(family: str) -> str:
    """'Roboto Light Italic' -> 'roboto'; 'Noto Sans Arabic' stays whole. Only trailing style words go."""
    words = re.split(r"[\s_-]+", family.strip().lower())
    while len(words) > 1 and words[-1] in _STYLE_WORDS:
        words.pop()
    return " ".join(words)
