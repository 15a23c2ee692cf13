"""How good a model is: the trainer's validation pass and `glyph-train evaluate` share one implementation.

    metrics.py      classification top-k, exact leave-one-out retrieval, effect size, by char_class
    evaluate.py     the validation pass and `glyph-train evaluate` of an export on any glyphs.db
    calibration.py  temperature scaling fitted on validation logits, stored in the export
"""
