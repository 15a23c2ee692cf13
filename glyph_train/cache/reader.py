"""Reading a prepared cache (written by prepare.py, whose docstring gives the layout): memory-mapped splits,
label names, and zero-copy numpy access to the images.

Training opens a cache through `load_prepared` and reads pixels through `images_view`, never through the
writer, so reading a cache needs none of the rendering machinery.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glyph_train.errors import GlyphTrainError

LABELS_FILE = "labels.json"
INFO_FILE = "prepare.json"


@dataclass
class PreparedData:
    path: Path
    train: Any  # datasets.Dataset
    validation: Any  # datasets.Dataset
    label_names: list[str]
    label_counts: list[int]  # train + validation rows per label index
    fingerprint: str
    cache_hit: bool = False
    info: dict = field(default_factory=dict)  # prepare.json

    @property
    def img_size(self) -> int:
        return int(self.info["params"]["img_size"])


def load_prepared(out: Path) -> PreparedData:
    """Open a prepared cache (memory-mapped; nothing is read into RAM up front)."""
    import datasets

    out = Path(out)
    if not (out / INFO_FILE).is_file() or not (out / LABELS_FILE).is_file():
        raise GlyphTrainError(f"{out}: not a prepared cache (no {INFO_FILE}/{LABELS_FILE}); "
                              "run `glyph-train prepare --db DB --out DIR`")
    try:
        info = json.loads((out / INFO_FILE).read_text(encoding="utf-8"))
        labels = json.loads((out / LABELS_FILE).read_text(encoding="utf-8"))
        dsd = datasets.load_from_disk(str(out))
    except (OSError, ValueError) as e:
        raise GlyphTrainError(f"{out}: unreadable cache ({e}); delete it and prepare again") from None
    entries = sorted(labels["labels"], key=lambda e: e["index"])
    return PreparedData(out, dsd["train"], dsd["validation"], [e["name"] for e in entries],
                        [int(e["count"]) for e in entries], info["fingerprint"], False, info)


def column_array(ds, name: str) -> np.ndarray:
    """A whole column as numpy in one Arrow call (ints: numeric array; strings: object array).

    `np.asarray(ds[name])` walks a datasets Column row by row: ~10 s per 500k rows instead of milliseconds.
    """
    col = ds.with_format("arrow")[name]  # honours an indices mapping (select/shuffle)
    return col.to_numpy() if col.num_chunks else np.zeros(0, dtype=np.int64 if name == "label" else object)


class ImageArray:
    """(N, S, S) uint8 images of a cache split as zero-copy numpy views over its Arrow memory map.

    An Arrow column is a list of chunks (one per record batch written), each with its own contiguous
    buffer, so the column is not one ndarray; this class indexes like one: `a[i]` is a read-only (S, S)
    view, `a[idx]` (ints, bool mask or slice) gathers a new (k, S, S) array. A slice inside one chunk is a view.
    Pickling re-opens the dataset's files instead of copying pixels (cheap for spawned DataLoader workers).
    """

    def __init__(self, ds) -> None:
        import pyarrow as pa

        self._ds = ds
        size = ds.features["image"].shape
        col = ds.data.table.column("image")
        chunks = []
        for chunk in col.chunks:
            if len(chunk) == 0:
                continue
            if chunk.null_count:
                raise GlyphTrainError("cache image column has nulls; delete the cache and prepare again")
            storage = chunk.storage if isinstance(chunk, pa.ExtensionArray) else chunk
            values = storage
            for _ in size:  # flatten() honours the chunk's slice offset, unlike .values
                values = values.flatten()
            if len(values) != len(chunk) * int(np.prod(size)):
                raise GlyphTrainError("cache image column is not (S, S) per row; delete the cache and prepare again")
            chunks.append(values.to_numpy(zero_copy_only=True).reshape(len(chunk), *size))
        self._chunks = chunks
        self._starts = [0]
        for c in chunks:
            self._starts.append(self._starts[-1] + len(c))
        self._index = None if ds._indices is None else np.asarray(ds._indices.column(0), dtype=np.int64)
        n = len(self._index) if self._index is not None else self._starts[-1]
        self.shape = (n, *size)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 1 + len(size)

    @property
    def chunks(self) -> list[np.ndarray]:
        return self._chunks

    def __len__(self) -> int:
        return self.shape[0]

    def __reduce__(self):
        return images_view, (self._ds,)

    def _row(self, i: int) -> np.ndarray:
        if self._index is not None:
            i = int(self._index[i])
        if len(self._chunks) == 1:
            return self._chunks[0][i]
        c = bisect.bisect_right(self._starts, i) - 1
        return self._chunks[c][i - self._starts[c]]

    def __getitem__(self, key):
        if isinstance(key, tuple):
            first, rest = key[0], key[1:]
            return self[first][(slice(None), *rest) if not _is_int(first) else rest]
        n = len(self)
        if _is_int(key):
            i = int(key)
            if not -n <= i < n:
                raise IndexError(f"index {i} out of range for {n} images")
            return self._row(i + n if i < 0 else i)
        if isinstance(key, slice):
            rng = range(*key.indices(n))
            if self._index is None and rng.step == 1 and len(rng):
                c = bisect.bisect_right(self._starts, rng.start) - 1
                if rng.stop <= self._starts[c + 1]:  # inside one chunk: a view
                    return self._chunks[c][rng.start - self._starts[c]: rng.stop - self._starts[c]]
            idx = np.arange(rng.start, rng.stop, rng.step, dtype=np.int64)
        else:
            idx = np.asarray(key)
            if idx.dtype == bool:
                if idx.shape != (n,):
                    raise IndexError(f"boolean index of shape {idx.shape} for {n} images")
                idx = np.nonzero(idx)[0]
            elif idx.size and not np.issubdtype(idx.dtype, np.integer):
                raise IndexError(f"images can be indexed by ints, slices or int/bool arrays, not {idx.dtype}")
            idx = idx.astype(np.int64, copy=False)
            if idx.size and (idx.min() < -n or idx.max() >= n):
                raise IndexError(f"index out of range for {n} images")
            idx = np.where(idx < 0, idx + n, idx)
        if self._index is not None:
            idx = self._index[idx]
        if len(self._chunks) == 1:
            return self._chunks[0][idx]  # numpy fancy indexing: one gather
        out = np.empty((*idx.shape, *self.shape[1:]), dtype=np.uint8)
        flat = out.reshape(-1, *self.shape[1:])
        starts = self._starts
        for k, i in enumerate(idx.reshape(-1).tolist()):
            c = bisect.bisect_right(starts, i) - 1
            flat[k] = self._chunks[c][i - starts[c]]
        return out

    def __iter__(self):
        for i in range(len(self)):
            yield self._row(i)

    def __array__(self, dtype=None, copy=None):
        arr = self[np.arange(len(self))] if len(self._chunks) != 1 or self._index is not None else self._chunks[0]
        return arr if dtype is None else arr.astype(dtype)

    def __repr__(self) -> str:
        return f"ImageArray(shape={self.shape}, chunks={len(self._chunks)})"


def _is_int(key) -> bool:
    return isinstance(key, (int, np.integer)) and not isinstance(key, bool)


def images_view(ds) -> ImageArray:
    """Zero-copy (N, S, S) uint8 access to a cache split's images: `view[i]` equals `ds[i]["image"]`."""
    return ImageArray(ds)
