"""Using a trained export: embed a corpus into a FAISS index (embed), find look-alikes (search), and label
and repair a font without a usable cmap (label-font).

    sources.py     glyphs to embed or label: rows of a glyphs.db, or every glyph of font files
    predictor.py   an export ready to predict: render params, calibrated probabilities, embeddings
    index.py       INDEX_DIR on disk: FAISS index + Parquet metadata + index.json, written atomically
    embed.py       `glyph-train embed`
    search.py      `glyph-train search`
    label_font.py  `glyph-train label-font`: per-glyph predictions and the joint assignment within a font
    font_prior.py  label-font's script prior: probabilities reweighted by the scripts the font draws
    join_prior.py  label-font's join prior: Arabic positional forms reweighted by how the font's glyphs join
    look_alike_prior.py  label-font's look-alike prior: O 0 o, I l 1 | ... by how their glyphs compare in size
    font_adaptation.py  label-font --adapt-steps: a copy of the model fine-tuned on the font's sure glyphs
    repair.py      the repaired copy of a font: cmap + Arabic init/medi/fina GSUB from the labels
"""
