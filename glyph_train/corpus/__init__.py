"""Fonts -> glyphs.db, and reading it: the corpus every later stage selects from.

    fonts.py         font files and the faces inside them (TTC members, variable-font instances), metrics
    fontsource.py    Google Fonts families from npm's @fontsource/* packages
    shaping.py       a glyph's outline as contours JSON: nominal glyph or Arabic positional form (HarfBuzz)
    unicode_data.py  Arabic joining type and group, char_class, labels (`65_isol`)
    build_db.py      `glyph-train build-db`: the glyphs.db writer
    db.py            the glyphs.db reader: read-only open, schema check, selection with filters
    font_rows.py     what a fonts row implies: the em box glyphs are drawn in, the family they belong to
"""
