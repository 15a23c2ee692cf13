"""pipeline.py: the one outline -> image -> tensor path (render_rows, to_model_input, model_outputs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glyph_train.cache.pipeline import RenderReport, render_rows, to_model_input
from glyph_train.cache.raster import RenderParams, render
from glyph_train.corpus.font_rows import EmBox
from glyph_train.corpus.shaping import ContourPen
from glyph_train.errors import GlyphTrainError

def _drawn(points: list[tuple[float, float]]) -> str:
    """Contours JSON as build-db writes it (ContourPen: whatever the DB format is)."""
    pen = ContourPen()
    pen.moveTo(points[0])
    for p in points[1:]:
        pen.lineTo(p)
    pen.closePath()
    return pen.json()


SQUARE = _drawn([(0, 0), (100, 0), (100, 100), (0, 100)])
POINT = _drawn([(5, 5), (5, 5)])


def test_render_rows_keeps_order_and_counts_failures_with_the_first_error():
    params = RenderParams(img_size=16, fit="em")
    em = EmBox(1000, 800, -200)
    rows = [(7, SQUARE, em), (8, "not json", em), (9, POINT, em), (10, '[[["bogus", [[1, 2]]]]]', em), (11, SQUARE, em)]
    done = render_rows(rows, params)
    assert done.keys == [7, 11] and done.images.shape == (2, 16, 16) and done.images.dtype == np.uint8
    np.testing.assert_array_equal(done.images[0], render(SQUARE, params, em))
    assert done.report.failed == 2 and done.report.blank == 1
    assert done.report.first_error.startswith("8: ") and "JSON" in done.report.first_error
    assert "2 outline(s) could not be rendered (first: 8: " in done.report.summary()
    assert done.report.summary().endswith(", 1 blank")
    kept = render_rows(rows, params, skip_blank=False)
    assert kept.keys == [7, 9, 11] and not kept.images[1].any()
    empty = render_rows([], params)
    assert empty.images.shape == (0, 16, 16) and empty.report.summary() == ""


def test_render_reports_add_up_and_stop_a_command_once_most_rows_fail():
    params = RenderParams(img_size=16)
    total = RenderReport()
    for chunk in ([(1, SQUARE, None), (2, "not json", None)], [(3, "[]", None), (4, "not json", None)]):
        total.merge(render_rows(chunk, params, key_name="glyph_id").report)
        total.check("g.db", 6)  # 2 of 6, then 3 of 6: not more than half
    assert (total.failed, total.first_error.split(":")[0]) == (3, "glyph_id 2")
    total.merge(render_rows([(5, "not json", None)], params).report)
    with pytest.raises(GlyphTrainError, match=r"^g\.db: 4 outline\(s\) could not be rendered .*more than half of the 6"):
        total.check("g.db", 6)


def test_to_model_input_one_image_or_a_batch():
    img = np.arange(16, dtype=np.uint8).reshape(4, 4) * 17
    img.setflags(write=False)  # like a view over the Arrow cache
    x = to_model_input(img)
    assert x.shape == (1, 4, 4) and x.dtype == torch.float32
    assert x.max().item() == 1.0 and x.min().item() == 0.0
    batch = to_model_input(np.stack([img, img]))
    assert batch.shape == (2, 1, 4, 4)
    torch.testing.assert_close(batch[1], x)
    assert to_model_input(torch.from_numpy(img.copy())).shape == (1, 4, 4)
    with pytest.raises(TypeError):
        to_model_input(img.astype(np.float32))
