from importlib.resources import files

import pytest

from glyph_train.corpus.unicode_data import (
    CHAR_CLASSES, FORMS, char_class, forms_for, is_listed, joining_group, joining_type, label,
)


def test_vendored_arabic_shaping_and_license_ship_with_the_package():
    data = files("glyph_train") / "resources"
    assert (data / "ArabicShaping.txt").read_text(encoding="utf-8").startswith("# ArabicShaping-")
    assert "UNICODE LICENSE" in (data / "UNICODE-LICENSE.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize("cp, jtype", [
    (0x0628, "D"),  # BEH
    (0x0627, "R"),  # ALEF
    (0x0629, "R"),  # TEH MARBUTA
    (0x0621, "U"),  # HAMZA: listed as non-joining
    (0x0640, "C"),  # TATWEEL
    (0x200D, "C"),  # ZWJ
    (0x064E, "T"),  # FATHA: unlisted Mn defaults to transparent
    (0x0041, "U"),  # unlisted, not a mark
])
def test_joining_type(cp, jtype):
    assert joining_type(cp) == jtype


@pytest.mark.parametrize("cp, group", [
    (0x0628, "BEH"), (0x0627, "ALEF"), (0x0629, "TEH_MARBUTA"), (0x06C1, "HEH_GOAL"),
    (0x0621, "NO_JOIN"),  # No_Joining_Group in the file
    (0x0640, "NO_JOIN"), (0x0041, "NO_JOIN"),  # not in the file
])
def test_joining_group(cp, group):
    assert joining_group(cp) == group


def test_forms_follow_joining_type():
    assert forms_for(0x0628) == FORMS == ("isol", "init", "medi", "fina")
    assert forms_for(0x0627) == ("isol", "fina")
    assert forms_for(0x0621) == forms_for(0x0640) == forms_for(0x0041) == ("isol",)
    assert label(1576, "init") == "1576_init" and label(65, "isol") == "65_isol"


@pytest.mark.parametrize("ch, cls", [
    ("\u0301", "diacritic"), ("\u064E", "diacritic"),  # M* wins over the name's script
    ("5", "digit"), ("\u0663", "digit"),                 # Nd, Latin and Arabic-Indic
    ("!", "punctuation"), ("\u060C", "punctuation"),     # ARABIC COMMA is punctuation, not arabic
    ("+", "symbol"), ("\u20AC", "symbol"),
    ("A", "latin"), ("\u00E9", "latin"),
    ("\u0628", "arabic"), ("\uFB01", "latin"),
    ("\u03A9", "greek"), ("\u0416", "cyrillic"),
    ("\u2126", "other"),  # OHM SIGN: a letter whose name names no script
    ("\u00B2", "other"),  # SUPERSCRIPT TWO is No, not Nd
])
def test_char_class_first_matching_rule(ch, cls):
    assert char_class(ord(ch)) == cls
    assert cls in CHAR_CLASSES


@pytest.mark.parametrize("cp, listed", [
    (0x41, True), (0x0301, True), (0xFB01, True), (0x0628, True),
    (0x20, False), (0xA0, False), (0x09, False),   # whitespace, control
    (0x200D, False), (0xFEFF, False),              # format characters
    (0xE000, False), (0xD800, False),              # private use, surrogate
    (0xFB51, False), (0xFE8F, False),              # Arabic presentation forms: covered by shaping
    (0x1F600, False),                              # outside the BMP
])
def test_is_listed(cp, listed):
    assert is_listed(cp) is listed
