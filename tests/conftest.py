"""Suite-wide settings: the suite never writes to the user's own cache folder (~/.cache/glyph-train)."""

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def user_cache_dir(tmp_path_factory):
    """GLYPH_TRAIN_CACHE points at a temporary folder for every test and every process a test starts."""
    old = os.environ.get("GLYPH_TRAIN_CACHE")
    os.environ["GLYPH_TRAIN_CACHE"] = str(tmp_path_factory.mktemp("user-cache"))
    yield os.environ["GLYPH_TRAIN_CACHE"]
    if old is None:
        os.environ.pop("GLYPH_TRAIN_CACHE", None)
    else:
        os.environ["GLYPH_TRAIN_CACHE"] = old
