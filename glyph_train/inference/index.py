"""INDEX_DIR: embeddings in a FAISS index plus one metadata row per glyph, written as a whole.

    index.faiss      one vector per distinct outline (identical outlines are embedded once), inner product
                     on L2-normalised embeddings = cosine similarity
    glyphs.parquet   one row per glyph: `vector` (its row in index.faiss) and what it is (COLUMNS)
    index.json       format, the export it was built with (path + fingerprint), render settings, factory

Exact `IndexFlatIP` by default; any FAISS factory string (`IVF4096,PQ32`, `HNSW32`, ...) is trained on a
seeded sample of the vectors. Writing goes to a temporary directory beside INDEX_DIR, renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from glyph_train.atomic import replace_dir
from glyph_train.errors import GlyphTrainError
from glyph_train.flags import Flag

INDEX_FORMAT = 1
INDEX_FILE, TABLE_FILE, INFO_FILE = "index.faiss", "glyphs.parquet", "index.json"
DEFAULT_FACTORY = "Flat"
TRAIN_SAMPLE = 200_000  # vectors an IVF/PQ index is trained on at most
INDEX_FLAG = Flag("--index", "index directory written by glyph-train embed", type=Path, metavar="INDEX_DIR")
SEARCH_PARAMS = {"IVF": "nprobe=32", "HNSW": "efSearch=128"}  # recall/latency balance, see BENCHMARKS.md

SCHEMA = pa.schema([
    ("vector", pa.int64()),  # row in index.faiss
    ("source", pa.string()),  # "db" | "font"
    ("db", pa.string()),  # glyphs.db path for DB rows, else ''
    ("font", pa.string()),  # face hash (fonts.file_hash for DB rows)
    ("font_file", pa.string()),
    ("face_index", pa.int32()),
    ("instance", pa.string()),
    ("family", pa.string()),
    ("style", pa.string()),
    ("glyph", pa.string()),  # glyph name ('' for DB rows)
    ("glyph_id", pa.int64()),  # glyph id in the font, or the DB's glyph_id
    ("label", pa.string()),  # known label ('' if unknown)
    ("predicted_label", pa.string()),
    ("confidence", pa.float32()),  # calibrated probability of predicted_label
    ("outline_hash", pa.string()),
    ("upem", pa.float64()),
    ("ascent", pa.float64()),
    ("descent", pa.float64()),
])
COLUMNS = tuple(SCHEMA.names)


@dataclass
class GlyphIndex:
    index: faiss.Index
    table: pa.Table
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def fonts(self) -> set[str]:
        return set(self.table.column("font").to_pylist())

    def rows(self, mask: np.ndarray | None = None) -> list[dict]:
        table = self.table if mask is None else self.table.filter(pa.array(mask))
        return table.to_pylist()

    def column(self, name: str) -> np.ndarray:
        return self.table.column(name).to_numpy(zero_copy_only=False)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors by id (decoded: approximate for PQ indexes)."""
        ids = np.asarray(ids, dtype=np.int64)
        try:
            return self.index.reconstruct_batch(ids)
        except RuntimeError:  # IVF without a direct map
            faiss.extract_index_ivf(self.index).make_direct_map()
            return self.index.reconstruct_batch(ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = max(1, min(k, self.index.ntotal))
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def new_index(dim: int, factory: str) -> faiss.Index:
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        line = str(err).strip().splitlines()[-1] if str(err).strip() else "invalid"
        raise GlyphTrainError(f"--index-factory {factory!r}: not a FAISS factory string FAISS accepts ({line})") from None
    for prefix, params in SEARCH_PARAMS.items():
        if factory.startswith(prefix) or f",{prefix}" in factory:
            faiss.ParameterSpace().set_index_parameters(index, params)
    return index


def add_vectors(index: faiss.Index, vectors: np.ndarray, factory: str, seed: int = 0) -> None:
    """Add, training the index first on a seeded sample when it needs training."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        sample = vectors if len(vectors) <= TRAIN_SAMPLE else vectors[rng.choice(len(vectors), TRAIN_SAMPLE, replace=False)]
        try:
            index.train(sample)
        except RuntimeError as err:
            line = str(err).strip().splitlines()[-1] if str(err).strip() else ""
            raise GlyphTrainError(f"--index-factory {factory!r} cannot be trained on {len(sample):,} vectors ({line}); "
                                  "use a smaller one (e.g. fewer IVF lists) or the exact default") from None
    if len(vectors):
        index.add(vectors)


def table_from_rows(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA) if rows else SCHEMA.empty_table()


def load_index(path: str | Path) -> GlyphIndex:
    path = Path(path)
    if not (path / INFO_FILE).is_file():
        raise GlyphTrainError(f"{path}: not a glyph-train index (no {INFO_FILE}); build one with `glyph-train embed`")
    try:
        info = json.loads((path / INFO_FILE).read_text(encoding="utf-8"))
        index = faiss.read_index(str(path / INDEX_FILE))
        table = pq.read_table(path / TABLE_FILE, schema=SCHEMA)
    except (OSError, ValueError, RuntimeError, pa.ArrowException) as err:
        line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GlyphTrainError(f"{path}: damaged index ({line}); rebuild it with `glyph-train embed`") from None
    if info.get("format") != INDEX_FORMAT:
        raise GlyphTrainError(f"{path}: index format {info.get('format')} is not {INDEX_FORMAT}; rebuild it")
    if index.ntotal != info.get("num_vectors") or len(table) != info.get("num_glyphs"):
        raise GlyphTrainError(f"{path}: index.faiss / glyphs.parquet do not match index.json; rebuild it")
    for prefix, params in SEARCH_PARAMS.items():
        if info.get("factory", "").startswith(prefix) or f",{prefix}" in info.get("factory", ""):
            faiss.ParameterSpace().set_index_parameters(index, params)
    return GlyphIndex(index, table, info)


def check_writable(path: Path) -> None:
    """Only ever replace an earlier index or an empty directory, never someone's other files."""
    if path.exists() and not (path / INFO_FILE).is_file() and (not path.is_dir() or any(path.iterdir())):
        raise GlyphTrainError(f"{path} exists and is not a glyph-train index; choose another --out or remove it")


def save_index(path: str | Path, gi: GlyphIndex) -> None:
    """Write the three files into a temporary directory beside `path`, then swap it into place."""
    path = Path(path)
    check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        faiss.write_index(gi.index, str(tmp / INDEX_FILE))
        pq.write_table(gi.table, tmp / TABLE_FILE)
        info = {**gi.info, "format": INDEX_FORMAT, "num_vectors": int(gi.index.ntotal), "num_glyphs": len(gi.table)}
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
