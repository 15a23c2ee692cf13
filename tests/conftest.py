"""Suite-wide settings (the suite never writes to the user's own cache folder, ~/.cache/glyph-train) and the
session fixtures several test modules share: a tiny model trained once, and an index embedded with it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dbfactory import DEFAULT_FONTS, write_db
from fontfactory import fontpkg_file, strip_font, subset_font
from test_inference import ARABIC, LATIN, REPO, cli, env


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


def train_tiny(db: Path, root: Path, out_dir: Path, epochs: int = 2) -> Path:
    """The inference tests' tiny model (test_vit, 32 px, em fit) trained on `db`; its export's path."""
    cmd = [sys.executable, "-m", "glyph_train.train", "--db", str(db), "--cache-dir", str(root / "cache"),
           "--val-frac", "0.3", "--model", "test_vit", "--img-size", "32", "--fit", "em", "--epochs", str(epochs),
           "--batch-size", "16", "--num-workers", "0", "--num-proc", "1", "--out-dir", str(out_dir),
           "--wandb-mode", "disabled"]
    res = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return out_dir / "export"


@pytest.fixture(scope="session")  # shared by the inference and serve tests: trained once
def work(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("inference")
    db = write_db(root / "glyphs.db", fonts=[DEFAULT_FONTS[0], DEFAULT_FONTS[2], DEFAULT_FONTS[4]])
    train_tiny(db.path, root, root / "run")
    fonts = root / "fonts"
    fonts.mkdir()
    amiri = subset_font(fontpkg_file("fontpkg_amiri", "Amiri-Regular.ttf"), fonts / "Amiri-sub.ttf", ARABIC + LATIN)
    latin = subset_font(fontpkg_file("fontpkg_abril_fatface", "AbrilFatface-Regular.ttf"), fonts / "Abril-sub.ttf", LATIN)
    extra = root / "more" / "Bebas-sub.ttf"
    extra.parent.mkdir()
    subset_font(fontpkg_file("fontpkg_bebas_neue", "BebasNeue-Regular.ttf"), extra, LATIN)
    stripped = strip_font(amiri, root / "Amiri-stripped.ttf")
    return {"root": root, "db": db.path, "export": root / "run" / "export", "fonts": fonts, "amiri": amiri,
            "latin": latin, "extra": extra, "stripped": stripped}


@pytest.fixture(scope="session")
def index(work) -> Path:
    out = work["root"] / "index"
    rc, _ = cli("embed", "--checkpoint", work["export"], work["fonts"], "--out", out)
    assert rc == 0
    return out
