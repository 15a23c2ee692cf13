"""Unicode properties that decide a glyph's rows and labels: Arabic joining type and group, char_class.

Joining data comes from the vendored ArabicShaping.txt (Python's unicodedata does not carry it);
everything else comes from unicodedata.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from importlib.resources import files

FORMS: tuple[str, ...] = ("isol", "init", "medi", "fina")
# Figure variants build-db draws through these GSUB features, labelled like forms ('51_numr'): numerators,
# denominators, superiors and inferiors are drawn like the digit only smaller, and fonts leave them unmapped.
# A model without classes for them reads them as the digit itself, and they take its label in label-font.
FIGURE_FEATURES: tuple[str, ...] = ("numr", "dnom", "sups", "sinf")
FIGURES = range(0x30, 0x3A)  # the ASCII digits, which have the figure variants
LABEL_FORMS: tuple[str, ...] = FORMS + FIGURE_FEATURES  # what follows the code point in a label
CHAR_CLASSES: tuple[str, ...] = (
    "diacritic", "digit", "punctuation", "symbol", "arabic", "latin", "greek", "cyrillic", "other",
)
NO_JOIN = "NO_JOIN"

# Categories with nothing to draw or nothing stable to label: controls, format characters, surrogates,
# private use, unassigned, and all separators (whitespace).
_UNLISTED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
# Arabic Presentation Forms-A/-B (and the small forms between them): their shapes are already the
# positional rows of the base letters, obtained by shaping.
_PRESENTATION_FORMS = range(0xFB50, 0xFF00)
_NAME_CLASSES: tuple[tuple[str, str], ...] = (
    ("ARABIC", "arabic"), ("LATIN", "latin"), ("GREEK", "greek"), ("CYRILLIC", "cyrillic"),
)


@lru_cache(maxsize=1)
def _joining_table() -> dict[int, tuple[str, str]]:
    """code point -> (joining type, joining group as written in the file)."""
    table: dict[int, tuple[str, str]] = {}
    text = (files("glyph_train") / "resources" / "ArabicShaping.txt").read_text(encoding="utf-8")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        cp, _name, jtype, group = (field.strip() for field in line.split(";"))
        table[int(cp, 16)] = (jtype, group)
    return table


def joining_type(cp: int) -> str:
    """Unicode Joining_Type: 'R', 'L', 'D', 'C', 'U' or 'T'."""
    entry = _joining_table().get(cp)
    if entry is not None:
        return entry[0]
    # The file's documented default for unlisted code points.
    return "T" if unicodedata.category(chr(cp)) in ("Mn", "Me", "Cf") else "U"


def joining_group(cp: int) -> str:
    """Joining_Group with spaces as underscores (e.g. 'TEH_MARBUTA'); 'NO_JOIN' when there is none."""
    entry = _joining_table().get(cp)
    if entry is None or entry[1] == "No_Joining_Group":
        return NO_JOIN
    return entry[1].replace(" ", "_")


def forms_for(cp: int) -> tuple[str, ...]:
    """Positional forms that get a row: the joining type decides, not whether the font's glyphs differ."""
    jtype = joining_type(cp)
    if jtype == "D":
        return FORMS
    if jtype == "R":
        return ("isol", "fina")
    return ("isol",)


@lru_cache(maxsize=None)
def char_class(cp: int) -> str:
    """First matching rule: M* diacritic, Nd digit, P* punctuation, S* symbol, then by the character's name."""
    ch = chr(cp)
    category = unicodedata.category(ch)
    if category[0] == "M":
        return "diacritic"
    if category == "Nd":
        return "digit"
    if category[0] == "P":
        return "punctuation"
    if category[0] == "S":
        return "symbol"
    name = unicodedata.name(ch, "")
    for word, cls in _NAME_CLASSES:
        if word in name:
            return cls
    return "other"


def is_listed(cp: int) -> bool:
    """Whether a cmap character gets rows: printable, in the BMP, and not a presentation form."""
    return (
        cp <= 0xFFFF
        and cp not in _PRESENTATION_FORMS
        and unicodedata.category(chr(cp)) not in _UNLISTED_CATEGORIES
    )


def label(cp: int, form: str) -> str:
    """The class label of one positional form of a character, e.g. '1576_init'."""
    return f"{cp}_{form}"
