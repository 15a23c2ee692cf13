"""Glyph pictures for the pages: contours drawn by the project's renderer (raster.render, the same one the
model's inputs come from) with the model's fit (its first, for a multi-fit model), as dark ink on white PNGs,
kept in a bounded LRU cache."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from typing import Callable, Hashable

import numpy as np
from PIL import Image

from glyph_train.cache.raster import RenderParams, render
from glyph_train.corpus.font_rows import EmBox

DISPLAY_SIZE = 96  # pixels; large enough to judge a shape, small enough for 100 on a page


def glyph_png(contours: str | None, fit: str, em: EmBox | None, size: int = DISPLAY_SIZE) -> bytes:
    """A PNG of the outline; an empty frame when there is nothing (or nothing valid) to draw."""
    ink = np.zeros((size, size), np.uint8)
    if contours:
        try:
            ink = render(contours, RenderParams(img_size=size, fit=fit).picture(), em)
        except ValueError:
            pass
    buf = io.BytesIO()
    Image.fromarray(255 - ink).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


class PngCache:
    """key -> PNG bytes, least recently used dropped first; `make` runs outside the lock."""

    def __init__(self, max_items: int = 8192) -> None:
        self.max_items = max_items
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable, make: Callable[[], bytes]) -> bytes:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
        png = make()
        with self._lock:
            self._items[key] = png
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return png

    def drop(self, prefix: Hashable) -> None:
        """Forget every key (a tuple) starting with `prefix`, e.g. a removed upload's pictures."""
        with self._lock:
            for key in [k for k in self._items if isinstance(k, tuple) and k[:1] == (prefix,)]:
                del self._items[key]
