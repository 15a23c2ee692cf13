"""Outlines -> images -> the prepared train/validation cache that training reads.

    raster.py    contours JSON -> anti-aliased uint8 image (`tight` or `em` fit)
    pipeline.py  the one path from outline to model input, shared by prepare, show, evaluate and inference
    splits.py    train/validation splits of a selection (whole families held out by default)
    prepare.py   `glyph-train prepare`: the cache writer (render pool, fingerprint, Arrow assembly)
    reader.py    the cache reader: memory-mapped splits, labels, zero-copy image views (what training opens)
    show.py      `glyph-train show`: a contact sheet of the exact pixels the cache would hold
"""
