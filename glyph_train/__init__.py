"""glyph-train: glyph recognition and embedding models trained from font outlines."""

__version__ = "0.1.0"
