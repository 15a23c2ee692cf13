"""The family split holds out families within each script, so a minority script is always validated."""

from __future__ import annotations

import pytest

from glyph_train.cache.splits import split_glyphs
from glyph_train.corpus.db import select_glyphs
from glyph_train.corpus.font_rows import family_key
from tests.dbfactory import write_db


@pytest.fixture(scope="module")
def glyphs(tmp_path_factory):
    info = write_db(tmp_path_factory.mktemp("split") / "glyphs.db")
    return select_glyphs(info.path).glyphs


@pytest.mark.parametrize("seed", range(6))
def test_every_script_stratum_is_validated_and_families_never_straddle(glyphs, seed: int) -> None:
    result = split_glyphs(glyphs, "font", 0.2, seed)
    val_classes = {glyphs[i].char_class for i in result.validation}
    assert "arabic" in val_classes  # 2 of the 5 families cover Arabic: one of them is always held out
    assert {family_key(glyphs[i].family) for i in result.validation} & {"roboto", "lora", "inter"}
    train_fams = {family_key(glyphs[i].family) for i in result.train}
    assert not train_fams & {family_key(glyphs[i].family) for i in result.validation}


def test_split_is_deterministic_from_seed(glyphs) -> None:
    assert split_glyphs(glyphs, "font", 0.2, 3).validation == split_glyphs(glyphs, "font", 0.2, 3).validation
