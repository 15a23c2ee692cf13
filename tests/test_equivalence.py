"""Ambiguity-aware scoring: top1_equiv, confused pairs, per-family metrics, and `glyph-train evaluate`'s
confusion files, on hand-made cases and a real export of a tiny model evaluated on real outlines."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glyph_train.evaluation.metrics import confused_pairs, equivalent_top1, evaluate_embeddings


def one_hot(predicted: list[int], classes: int) -> np.ndarray:
    logits = np.zeros((len(predicted), classes), dtype=np.float32)
    logits[np.arange(len(predicted)), predicted] = 1.0
    return logits


# font A draws labels 0 ("A") and 1 ("А", Cyrillic) with one outline; font B draws them differently
LABELS = np.array([0, 1, 0, 1, 2])
FONTS = ["A", "A", "B", "B", "B"]
HASHES = ["same", "same", "b0", "b1", "b2"]


def test_identical_outline_in_the_same_font_counts():
    logits = one_hot([1, 0, 1, 0, 2], 3)  # every Latin/Cyrillic prediction swapped
    flags = equivalent_top1(logits, LABELS, FONTS, HASHES)
    assert flags.tolist() == [True, True, False, False, True]
    out = evaluate_embeddings(logits, np.eye(5, 4, dtype=np.float32) + 0.1, LABELS, ["latin"] * 5,
                              fonts=FONTS, outline_hashes=HASHES, families=["Fam A", "Fam A", "Fam B", "Fam B", "Fam B"])
    assert out["top1"] == pytest.approx(1 / 5) and out["top1_equiv"] == pytest.approx(3 / 5)
    assert out["by_family"]["Fam A"]["top1_equiv"] == 1.0 and out["by_family"]["Fam B"]["top1_equiv"] == pytest.approx(1 / 3)
    assert out["by_char_class"]["latin"]["top1_equiv"] == out["top1_equiv"]


def test_another_font_drawing_the_same_outline_does_not_count():
    # B's label-0 glyph predicted as 1: only font A draws 1 with that outline
    flags = equivalent_top1(one_hot([0, 1, 1, 1, 2], 3), LABELS, FONTS, ["same", "same", "same", "b1", "b2"])
    assert flags.tolist() == [True, True, False, True, True]


def test_unknown_labels_never_count_and_plain_top1_unchanged():
    labels = np.array([0, 5, -1])
    flags = equivalent_top1(one_hot([0, 0, 0], 3), labels, ["A"] * 3, ["h"] * 3)
    assert flags.tolist() == [True, False, False]
    out = evaluate_embeddings(one_hot([0, 0, 0], 3), np.eye(3, dtype=np.float32), labels, ["x"] * 3)
    assert "top1_equiv" not in out  # needs fonts and hashes


def test_confused_pairs_most_frequent_first_with_forgiven_counts():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    logits = one_hot([1, 1, 2, 0, 1, 0, 0, 2], 3)
    equiv = np.array([True, False, False, False, True, False, False, True])
    pairs = confused_pairs(logits, labels, top=2, equivalent=equiv)
    assert pairs == [{"true": 0, "predicted": 1, "count": 2, "equivalent": 1},
                     {"true": 2, "predicted": 0, "count": 2, "equivalent": 0}]
    assert confused_pairs(logits, labels)[-1] == {"true": 1, "predicted": 0, "count": 1, "equivalent": None}
    assert confused_pairs(one_hot([0, 1], 2), np.array([0, 1])) == []


@pytest.fixture(scope="module")
def export_and_db(tmp_path_factory) -> tuple[Path, Path]:
    """An untrained tiny model's real export (plenty of confusions) and a DB of real outlines."""
    from glyph_train.model.export import save_export
    from glyph_train.model.network import GlyphModel
    from tests.dbfactory import DEFAULT_FONTS, write_db

    root = tmp_path_factory.mktemp("equiv")
    info = write_db(root / "glyphs.db", fonts=(DEFAULT_FONTS[0], DEFAULT_FONTS[4]))  # Roboto, Amiri
    with sqlite3.connect(info.path) as conn:
        labels = sorted({label for (label,) in conn.execute("SELECT label FROM glyphs")})
    model = GlyphModel("test_vit", num_classes=len(labels), embedding_dim=16, img_size=32)
    save_export(root / "export", model, labels, {"model": "test_vit", "img_size": 32, "fit": "em",
                                                  "embedding_dim": 16, "dropout": 0.0})
    return root / "export", info.path


def test_evaluate_writes_confusions_beside_metrics(export_and_db, tmp_path):
    from glyph_train.cli import main

    export, db = export_and_db
    before = db.read_bytes()
    out = tmp_path / "held_out.json"
    assert main(["evaluate", "--checkpoint", str(export), "--db", str(db), "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["top1_equiv"] >= metrics["top1"]
    for name in ("latin", "arabic", "digit"):
        assert {"top1", "top1_equiv", "top5", "hit_at_10", "map_at_r"} <= set(metrics["by_char_class"][name])
    with sqlite3.connect(db) as conn:
        families = {f for (f,) in conn.execute("SELECT family_name FROM fonts")}
    assert set(metrics["by_family"]) == families
    pairs = json.loads((tmp_path / "held_out.confusions.json").read_text())
    assert 0 < len(pairs) <= 30 and all(p["true"] != p["predicted"] and p["count"] >= 1 for p in pairs)
    assert [p["count"] for p in pairs] == sorted((p["count"] for p in pairs), reverse=True)
    assert all(isinstance(p["true"], str) and 0 <= p["equivalent"] <= p["count"] for p in pairs)
    sheet = Image.open(tmp_path / "held_out.confusions.png")
    assert sheet.width > 6 * 32 and sheet.height > 32 * math.ceil(2 * len(pairs) / 6)
    assert db.read_bytes() == before


def test_trainer_validation_reports_top1_equiv_from_cached_images():
    """The trainer has no contours at validation: an identical cached image of the same font is the same outline."""
    import torch
    from accelerate import Accelerator

    from glyph_train.evaluation.evaluate import evaluate_model

    class AlwaysLabelZero(torch.nn.Module):  # a fixed classifier, so the expected counts are exact
        def forward(self, image):
            flat = image.flatten(1)
            logits = torch.tensor([1.0, 0.0, 0.0]).expand(len(image), 3)
            return {"logits": logits, "embedding": flat[:, :16] + 1e-3}

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(6, 32, 32), dtype=np.uint8)
    images[1] = images[0]  # font A draws labels 0 and 1 identically
    labels = [0, 1, 0, 1, 2, 2]
    fonts = np.array(["A", "A", "B", "B", "A", "B"], dtype=object)
    data = [{"image": torch.from_numpy(images[i]).float().div(255).unsqueeze(0), "label": labels[i], "index": i}
            for i in range(6)]
    model = AlwaysLabelZero()
    accelerator = Accelerator(cpu=True)
    loader = accelerator.prepare(torch.utils.data.DataLoader(data, batch_size=4))
    metrics, _ = evaluate_model(model, loader, np.array(["latin"] * 6, dtype=object), accelerator, 0,
                                fonts=fonts, images=images)
    # right: rows 0 and 2; forgiven: row 1 (font A draws label 0 with the same image); not: B's label 1, the 2s
    assert metrics["top1"] == pytest.approx(2 / 6) and metrics["top1_equiv"] == pytest.approx(3 / 6)
    plain, _ = evaluate_model(model, loader, np.array(["latin"] * 6, dtype=object), accelerator, 0)
    assert "top1_equiv" not in plain and plain["top1"] == metrics["top1"]
