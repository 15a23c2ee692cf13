"""Export round trips (real timm models, real safetensors files) and the atomic replace."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glyph_train.errors import GlyphTrainError
from glyph_train.model.export import load_export, save_export
from glyph_train.model.network import GlyphModel

LABELS = ["65227_init", "65227_fina", "0661", "A", "b"]
TRAIN_CONFIG = {"model": "test_vit", "fit": "em", "img_size": 32, "seed": 3, "lr_head": 3e-3, "db": "glyphs.db"}


def tiny_model(name: str = "test_vit", img_size: int = 32, **kw) -> GlyphModel:
    torch.manual_seed(0)
    return GlyphModel(name, num_classes=len(LABELS), embedding_dim=16, img_size=img_size, **kw)


def outputs(model: torch.nn.Module, img_size: int = 32) -> dict[str, torch.Tensor]:
    x = torch.rand(3, 1, img_size, img_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(x)


def digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("name,img_size,extra", [
    ("test_vit", 32, {}),                                      # fixed-size position table: img_size must round-trip
    ("test_efficientnet", 32, {"arcface_margin": 0.3, "arcface_scale": 16.0}),  # BN buffers + ArcFace head
    ("levit_128s", 32, {}),                                    # the default model: attention biases
])
def test_round_trip_gives_identical_outputs(tmp_path, name, img_size, extra):
    model = tiny_model(name, img_size, **extra)
    model.train()
    outputs(model, img_size)  # move BatchNorm running stats away from their initial values
    model.eval()
    save_export(tmp_path / "export", model, LABELS, {**TRAIN_CONFIG, "model": name})

    loaded, labels, config = load_export(tmp_path / "export")
    assert not loaded.training
    assert labels == LABELS
    assert config["model_name"] == name and config["num_classes"] == len(LABELS)
    assert config["img_size"] == img_size and config["embedding_dim"] == 16 and config["fit"] == "em"
    assert config["arcface_margin"] == extra.get("arcface_margin", 0.0)
    assert config["seed"] == 3 and config["db"] == "glyphs.db"  # the training config travels with the export
    expected, got = outputs(model, img_size), outputs(loaded, img_size)
    for key in ("logits", "embedding", "features"):
        assert torch.equal(expected[key], got[key]), key
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["config.json", "labels.json", "model.safetensors"]
    assert json.loads((tmp_path / "export" / "labels.json").read_text()) == LABELS


def test_wrapped_model_is_unwrapped(tmp_path):
    model = tiny_model().eval()
    save_export(tmp_path / "e", torch.nn.DataParallel(model), LABELS, TRAIN_CONFIG)
    loaded, _, _ = load_export(tmp_path / "e")
    assert torch.equal(outputs(model)["logits"], outputs(loaded)["logits"])


def test_load_needs_no_accelerate(tmp_path):
    save_export(tmp_path / "e", tiny_model(), LABELS, TRAIN_CONFIG)
    code = ("import sys; sys.modules['accelerate'] = None\n"  # any import of accelerate now fails
            "from glyph_train.model.export import load_export\n"
            f"m, labels, cfg = load_export({str(tmp_path / 'e')!r})\n"
            "print(len(labels), cfg['model_name'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(len(LABELS)), "test_vit"]


def test_existing_export_is_replaced_whole(tmp_path):
    target = tmp_path / "export"
    save_export(target, tiny_model(), LABELS, TRAIN_CONFIG)
    (target / "stale.txt").write_text("from an older export")
    torch.manual_seed(1)
    other = GlyphModel("test_vit", num_classes=2, embedding_dim=16, img_size=32).eval()
    save_export(target, other, ["x", "y"], {**TRAIN_CONFIG, "seed": 9})

    assert sorted(p.name for p in target.iterdir()) == ["config.json", "labels.json", "model.safetensors"]
    loaded, labels, config = load_export(target)
    assert labels == ["x", "y"] and config["seed"] == 9
    assert torch.equal(outputs(other)["embedding"], outputs(loaded)["embedding"])
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no temp or backup directories left behind


def test_failure_mid_write_leaves_previous_export_intact(tmp_path):
    target = tmp_path / "export"
    save_export(target, tiny_model(), LABELS, TRAIN_CONFIG)
    before = digest(target)
    # The weights are already written to the temp dir when config.json fails to serialise.
    with pytest.raises(TypeError, match="not JSON serialisable"):
        save_export(target, tiny_model("test_efficientnet"), LABELS, {**TRAIN_CONFIG, "bad": object()})
    assert digest(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["export"]
    with pytest.raises(TypeError):
        save_export(tmp_path / "fresh", tiny_model(), LABELS, {"bad": {1, 2}})
    assert not (tmp_path / "fresh").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_label_count_must_match_model(tmp_path):
    with pytest.raises(ValueError, match="5 classes but 2 label names"):
        save_export(tmp_path / "e", tiny_model(), ["a", "b"], TRAIN_CONFIG)
    assert not list(tmp_path.iterdir())


def test_missing_or_incomplete_export_is_a_clear_error(tmp_path):
    with pytest.raises(GlyphTrainError, match="no export directory"):
        load_export(tmp_path / "nowhere")
    target = tmp_path / "export"
    save_export(target, tiny_model(), LABELS, TRAIN_CONFIG)

    (target / "config.json").rename(tmp_path / "config.json")
    with pytest.raises(GlyphTrainError, match="incomplete export, missing config.json"):
        load_export(target)
    (tmp_path / "config.json").rename(target / "config.json")

    weights = target / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])  # truncated copy
    with pytest.raises(GlyphTrainError, match="model.safetensors"):
        load_export(target)
    weights.write_bytes(good)

    (target / "labels.json").write_text(json.dumps(LABELS[:3]))
    with pytest.raises(GlyphTrainError, match="3 labels but config.json says num_classes=5"):
        load_export(target)
    (target / "labels.json").write_text("[not json")
    with pytest.raises(GlyphTrainError, match="not valid JSON"):
        load_export(target)


def test_weights_of_another_architecture_are_rejected(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    save_export(a, tiny_model("test_vit"), LABELS, TRAIN_CONFIG)
    save_export(b, tiny_model("test_efficientnet"), LABELS, TRAIN_CONFIG)
    (b / "model.safetensors").replace(a / "model.safetensors")
    with pytest.raises(GlyphTrainError, match="weights do not match test_vit|wrong shapes for test_vit"):
        load_export(a)


def test_interrupted_replace_points_at_the_backup(tmp_path):
    # State after a crash between the two renames of a replacement: the old export moved aside, no new one.
    save_export(tmp_path / "export", tiny_model(), LABELS, TRAIN_CONFIG)
    (tmp_path / "export").rename(tmp_path / ".export.old-1234abcd")
    with pytest.raises(GlyphTrainError, match=r"previous export at .*\.export\.old-1234abcd"):
        load_export(tmp_path / "export")
