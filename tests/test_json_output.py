"""metrics.json (evaluate) and metrics.jsonl (training log) are strict JSON: undefined metrics are null, not NaN."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from glyph_train.cli import main
from glyph_train.model.export import save_export
from glyph_train.model.network import GlyphModel
from tests.dbfactory import DEFAULT_FONTS, write_db


def strict_json(text: str):
    """Python's json module accepts NaN/Infinity; a strict parser (browsers, jq, Go, Rust) does not."""
    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_evaluate_writes_null_for_undefined_metrics(tmp_path: Path) -> None:
    # one font: every label has a single glyph, so retrieval metrics have no positives and are undefined
    info = write_db(tmp_path / "glyphs.db", fonts=DEFAULT_FONTS[:1], latin="ABCD", arabic=())
    labels = sorted(info.labels)
    torch.manual_seed(0)
    model = GlyphModel("test_vit", num_classes=len(labels), img_size=32)
    save_export(tmp_path / "export", model, labels, {"model": "test_vit", "img_size": 32, "fit": "tight"})
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "export"), "--db", str(info.path), "--out", str(out)]) == 0
    metrics = strict_json(out.read_text())
    assert metrics["effect_size"] is None, metrics  # no same-label pair: undefined (NaN before)


def test_metrics_log_writes_null_for_nan_and_inf(tmp_path: Path) -> None:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from glyph_train.training.tracking import MetricsLog

    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        log = MetricsLog(Accelerator(cpu=True), tmp_path / "metrics.jsonl")
        log.log({"loss": float("nan"), "val": {"effect_size": np.float64("nan"), "top1": np.float32(0.5),
                                                "by_char_class": {"latin": {"map_at_r": torch.tensor(float("inf"))}}}},
                step=3)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    (record,) = [strict_json(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert record["loss"] is None and record["val"]["effect_size"] is None and record["val"]["top1"] == 0.5
    assert record["val"]["by_char_class"]["latin"]["map_at_r"] is None
