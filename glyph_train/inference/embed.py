"""`glyph-train embed --checkpoint EXPORT (--db DB | FONT|DIR ...) --out INDEX_DIR [--append] [--index-factory SPEC]
[--bf16]`

Every glyph of a glyphs.db (read-only) or of font files (every glyph id, mapped by the cmap or not) into
INDEX_DIR (index.py). Identical outlines (same contours and, for the em fit, same font metrics) are
rendered and embedded once. Under `accelerate launch` each process takes a contiguous share of the fonts;
the main process gathers the shares in rank order (so the index is the same for any process count) and
alone writes INDEX_DIR.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from glyph_train.cache.pipeline import FORWARD_BATCH_FLAG, RenderReport
from glyph_train.errors import GlyphTrainError
from glyph_train.inference.index import (DEFAULT_FACTORY, GlyphIndex, add_vectors, check_writable, load_index,
                                         new_index, save_index, table_from_rows)
from glyph_train.inference.predictor import BF16_FLAG, Predictor
from glyph_train.model.export import CHECKPOINT_FLAG
from glyph_train.inference.sources import GlyphRecord, db_font_files, db_records, face_glyphs, font_faces


def add_arguments(parser: argparse.ArgumentParser) -> None:
    CHECKPOINT_FLAG.add(parser, required=True)
    parser.add_argument("inputs", nargs="*", metavar="FONT|DIR", help="font files or directories searched recursively")
    parser.add_argument("--db", type=Path, help="embed the glyphs of this glyphs.db (opened read-only) instead")
    parser.add_argument("--out", required=True, type=Path, help="index directory to write")
    parser.add_argument("--append", action="store_true", help="add only fonts not yet in --out's index")
    parser.add_argument("--index-factory", default=None, metavar="SPEC",
                        help="FAISS factory string, e.g. HNSW32 or IVF4096,PQ32 (default: exact Flat)")
    BF16_FLAG.add(parser)
    FORWARD_BATCH_FLAG.add(parser)


def run(args: argparse.Namespace) -> int:
    if bool(args.db) == bool(args.inputs):
        raise GlyphTrainError("give either --db DB or font files/directories, not both and not neither")
    embed(args.checkpoint, args.out, db=args.db, inputs=args.inputs, append=args.append,
          factory=args.index_factory, batch_size=args.batch_size, bf16=args.bf16)
    return 0


@dataclass
class Share:
    """What one process embedded: metadata rows, and the vectors of the outlines new to the index."""

    rows: list[dict] = field(default_factory=list)  # GlyphIndex rows with a `key` in place of `vector`
    keys: list[str] = field(default_factory=list)  # distinct new outline keys, in first-seen order
    vectors: list[np.ndarray] = field(default_factory=list)
    predictions: dict[str, tuple[str, float]] = field(default_factory=dict)
    report: RenderReport = field(default_factory=RenderReport)
    empty: int = 0  # glyphs that draw nothing
    fonts_skipped: list[str] = field(default_factory=list)


def embed(checkpoint, out: Path, db: Path | None = None, inputs=(), append: bool = False,
          factory: str | None = None, batch_size: int = 256, bf16: bool = BF16_FLAG.default) -> GlyphIndex | None:
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    from glyph_train.training.distributed import check_world_size

    out = Path(out)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    check_world_size(accelerator)
    check_writable(out)
    predictor = Predictor(checkpoint, accelerator.device, batch_size, bf16)
    existing = load_index(out) if append and out.exists() else None
    if existing is not None:
        if existing.info.get("export_fingerprint") != predictor.fingerprint:
            raise GlyphTrainError(f"{out}: built with another model ({existing.info.get('export')}); "
                                  "--append needs the same --checkpoint, or write a new --out")
        if existing.info.get("bf16", False) != bf16:  # one index, one precision: its vectors stay comparable
            was = "with" if existing.info.get("bf16", False) else "without"
            raise GlyphTrainError(f"{out}: embedded {was} --bf16; --append {was} it too, or write a new --out")
        if factory and factory != existing.info.get("factory"):
            raise GlyphTrainError(f"{out}: has --index-factory {existing.info.get('factory')}, not {factory}")
    factory = factory or (existing.info["factory"] if existing else DEFAULT_FACTORY)
    if existing is None:
        new_index(predictor.embedding_dim, factory)  # a bad factory string fails before any work
    known = _known_keys(existing, predictor)
    units, unit_skips = _work_units(db, inputs, existing.fonts if existing else set())

    with accelerator.split_between_processes(units) as mine:
        share = _embed_units(mine, db, predictor, known, accelerator.is_local_main_process)
    shares: list[Share] = gather_object([share]) if accelerator.num_processes > 1 else [share]
    result = None
    if accelerator.is_main_process:
        result = _merge(shares, existing, predictor, factory, db, unit_skips)
        if result is None:
            print(f"embed: {out}: nothing new to add ({len(existing.table):,} glyphs, "
                  f"{existing.index.ntotal:,} vectors unchanged)")
        else:
            save_index(out, result)
            added = len(result.table) - (len(existing.table) if existing else 0)
            print(f"embed: wrote {out}: {len(result.table):,} glyphs ({added:,} new) as {result.index.ntotal:,} "
                  f"distinct outlines, index {factory}")
    accelerator.wait_for_everyone()
    return result


def _key(record: GlyphRecord, fit: str) -> str:
    em = record.em
    return _outline_key(record.outline_hash, em.upem, em.ascent, em.descent, fit)


def _outline_key(outline_hash: str, upem: float, ascent: float, descent: float, fit: str) -> str:
    """Identical outlines render identically; under a fit using the em box (all but tight) only within identical
    font metrics."""
    return outline_hash + (f"@{upem:g},{ascent:g},{descent:g}" if fit != "tight" else "")


def _known_keys(existing: GlyphIndex | None, predictor: Predictor) -> dict[str, int]:
    if existing is None:
        return {}
    out: dict[str, int] = {}
    fit = predictor.params.fit
    for h, upem, asc, desc, vec in zip(*(existing.table.column(c).to_pylist()
                                         for c in ("outline_hash", "upem", "ascent", "descent", "vector"))):
        out.setdefault(_outline_key(h, upem, asc, desc, fit), vec)
    return out


def _work_units(db: Path | None, inputs, skip_fonts: set[str]) -> tuple[list, list[str]]:
    """The fonts to embed, in a fixed order: ("db", font hash, glyph metas) or ("font", FontFace)."""
    skipped: list[str] = []
    if db is not None:
        from glyph_train.corpus.db import select_glyphs

        sel = select_glyphs(db)
        groups: dict[str, list] = defaultdict(list)
        for g in sel.glyphs:
            if g.font not in skip_fonts:
                groups[g.font].append(g)
        if sel.skipped:
            skipped.append(f"{db}: skipped rows: " + ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in sel.skipped.items()))
        return [("db", font, metas) for font, metas in groups.items()], skipped
    from glyph_train.corpus.fonts import find_font_files

    units = []
    for path in find_font_files(inputs):
        try:
            faces = font_faces(path)
        except GlyphTrainError as err:
            skipped.append(f"skipped {err}")
            continue
        units += [("font", face) for face in faces if face.file_hash not in skip_fonts]
    return units, skipped


def _embed_units(units: list, db: Path | None, predictor: Predictor, known: dict[str, int], progress: bool) -> Share:
    from tqdm.auto import tqdm

    share = Share()
    font_files = db_font_files(db) if db is not None else {}
    fit = predictor.params.fit
    seen = set(known)
    failed: set[str] = set()
    for unit in tqdm(units, desc="embed", unit="font", disable=None if progress else True, file=sys.stderr):
        if unit[0] == "db":
            records = list(db_records(db, unit[2], font_files))
        else:
            try:
                records, empty = face_glyphs(unit[1])
            except Exception as err:  # a font HarfBuzz cannot draw is skipped, never the whole run
                share.fonts_skipped.append(f"{unit[1].display_name}: cannot draw ({type(err).__name__}: {err})")
                continue
            share.empty += len(empty)
        todo: dict[str, GlyphRecord] = {}
        for r in records:
            key = _key(r, fit)
            if key not in seen:
                seen.add(key)
                todo[key] = r
        rendered = predictor.render((key, r.contours, r.em) for key, r in todo.items())
        share.report.merge(rendered.report)
        failed |= set(todo) - set(rendered.keys)
        if len(rendered.keys):
            pred = predictor.predict(rendered.images)
            best = pred.probs.argmax(axis=1)
            for key, j, p in zip(rendered.keys, best, pred.probs):
                share.predictions[key] = (predictor.label_names[j], float(p[j]))
            share.keys += rendered.keys
            share.vectors.append(pred.embeddings)
        for r in records:
            key = _key(r, fit)
            if key in failed:
                continue
            share.rows.append({"key": key, "source": r.source, "db": str(db) if r.source == "db" else "",
                               "font": r.font, "font_file": r.font_file, "face_index": r.face_index,
                               "instance": r.instance, "family": r.family, "style": r.style, "glyph": r.glyph,
                               "glyph_id": r.glyph_id, "label": r.label, "outline_hash": r.outline_hash,
                               "upem": r.em.upem, "ascent": r.em.ascent, "descent": r.em.descent})
    return share


def _merge(shares: list[Share], existing: GlyphIndex | None, predictor: Predictor, factory: str, db: Path | None,
           unit_skips: list[str]) -> GlyphIndex | None:
    """One index from the processes' shares (in rank order), appended to the existing one if any."""
    vector_of = _known_keys(existing, predictor)
    old_rows = existing.rows() if existing else []
    prediction = {}
    for row in old_rows:
        prediction.setdefault(row["vector"], (row["predicted_label"], row["confidence"]))
    new_vectors = []
    report, empty, skipped = RenderReport(), 0, list(unit_skips)
    next_id = existing.index.ntotal if existing else 0
    for share in shares:
        report.merge(share.report)
        empty += share.empty
        skipped += share.fonts_skipped
        vecs = np.concatenate(share.vectors) if share.vectors else np.zeros((0, predictor.embedding_dim), np.float32)
        for key, vec in zip(share.keys, vecs):
            if key in vector_of:  # another process embedded the same outline too
                continue
            vector_of[key] = next_id
            prediction[next_id] = share.predictions[key]
            new_vectors.append(vec)
            next_id += 1
    new_rows = []
    for share in shares:
        for row in share.rows:
            vec = vector_of[row.pop("key")]
            label, conf = prediction[vec]
            new_rows.append({**row, "vector": vec, "predicted_label": label, "confidence": conf})
    for line in skipped:
        print(f"embed: {line}", file=sys.stderr)
    left_out = ([f"{report.failed:,} glyphs that could not be rendered (first: {report.first_error})"]
                if report.failed else []) + ([f"{empty:,} glyphs that draw nothing"] if empty else [])
    if left_out:
        print(f"embed: left out {' and '.join(left_out)}", file=sys.stderr)
    if existing is not None and not new_rows:
        return None
    if not new_rows:
        raise GlyphTrainError("no glyph could be embedded: " + ("; ".join(skipped) or "no glyphs found"))
    index = existing.index if existing else new_index(predictor.embedding_dim, factory)
    vectors = np.stack(new_vectors) if new_vectors else np.zeros((0, predictor.embedding_dim), np.float32)
    add_vectors(index, vectors, factory)
    import pyarrow as pa

    table = table_from_rows(new_rows)
    if existing is not None:
        table = pa.concat_tables([existing.table, table])
    info = {"export": str(Path(predictor.export_dir).resolve()), "export_fingerprint": predictor.fingerprint,
            "img_size": predictor.params.img_size, "fit": predictor.params.fit, "factory": factory,
            "dim": predictor.embedding_dim, "temperature": predictor.temperature, "bf16": predictor.bf16}
    return GlyphIndex(index, table, info)
