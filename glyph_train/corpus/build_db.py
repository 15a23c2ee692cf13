"""`glyph-train build-db OUT.db [FONT|DIR ...] [--fontpkg] [--charset CLASSES]`: glyph outlines from
font files into a glyphs.db.

Each face (TTC member, variable-font named instance) is one `fonts` row; each printable BMP character
in its cmap is one `glyphs` row per positional form, and each ASCII digit one more per figure variant the
font's GSUB has (numerator, denominator, superior, inferior: labels like `51_numr`). Faces already in OUT.db
(by content hash and instance) are not read again, so re-running only adds what is new. Faces are read in
worker processes; the main process alone writes, one transaction per face, so an interrupted run leaves
whole faces only. Several build-db processes may add to one OUT.db at once: each face's transaction takes
the write lock first (waiting for the others) and re-checks the face and the next glyph id under it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sqlite3
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import lru_cache
from itertools import repeat
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from tqdm import tqdm

from glyph_train.corpus.fonts import FontError, FontFace, error_line, find_font_files, list_faces, sfnt_data
from glyph_train.corpus.shaping import Shaper
from glyph_train.corpus.unicode_data import CHAR_CLASSES, char_class, forms_for, is_listed, joining_group, label
from glyph_train.errors import GlyphTrainError
from glyph_train.flags import positive_int
from glyph_train.outputs import check_output_file, check_outputs

SCHEMA = """
CREATE TABLE IF NOT EXISTS fonts (
    file_hash TEXT PRIMARY KEY,      -- sha256 of the file; of file + member index + instance otherwise
    file_name TEXT NOT NULL,
    family_name TEXT,                -- typographic family (name ID 16, else 1): what family splits group by
    style_name TEXT,                 -- named instance or subfamily
    upem INTEGER,
    ascent INTEGER,                  -- hhea
    descent INTEGER,
    line_gap INTEGER,
    typo_ascent INTEGER,             -- OS/2, at the instance
    typo_descent INTEGER,
    x_height INTEGER,
    cap_height INTEGER,
    excluded INTEGER DEFAULT 0,
    face_index INTEGER DEFAULT 0,    -- member of a font collection
    instance TEXT,                   -- variable-font location, e.g. 'wght=700,wdth=100'; NULL if static
    source_path TEXT
);
CREATE TABLE IF NOT EXISTS glyphs (
    glyph_id INTEGER PRIMARY KEY,
    f_id TEXT REFERENCES fonts(file_hash),
    label TEXT,
    contours TEXT,
    joining_group TEXT,
    char_class TEXT
);
"""
FONT_COLUMNS = ("file_hash", "file_name", "family_name", "style_name", "upem", "ascent", "descent",
                "line_gap", "typo_ascent", "typo_descent", "x_height", "cap_height")
OPTIONAL_FONT_COLUMNS = ("face_index", "instance", "source_path")
GLYPH_COLUMNS = ("f_id", "label", "contours", "joining_group", "char_class")

GlyphRow = tuple[str, str, str, str]  # label, contours, joining_group, char_class
BUSY_TIMEOUT_S = 600  # how long a face's transaction waits for another build-db writing the same OUT.db


@dataclass
class BuildSummary:
    fonts_added: int = 0
    fonts_present: int = 0
    fonts_skipped: int = 0
    glyphs: int = 0
    labels: int = 0
    seconds: float = 0.0

    @property
    def fonts_per_s(self) -> float:
        return self.fonts_added / self.seconds if self.seconds > 0 else 0.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, metavar="OUT.db", help="glyphs.db to create or add to")
    parser.add_argument("inputs", nargs="*", metavar="FONT|DIR",
                        help="font files (TTF, OTF, TTC, WOFF, WOFF2) or directories searched recursively")
    parser.add_argument("--fontpkg", action="store_true", help="add every installed fontpkg-* font")
    parser.add_argument("--charset", metavar="CLASSES", type=_char_classes,
                        help=f"comma-separated char classes to keep ({','.join(CHAR_CLASSES)}); "
                             "fonts already in OUT.db are not read again whatever the charset")
    parser.add_argument("--jobs", type=positive_int, default=default_jobs(), metavar="N",
                        help="worker processes reading fonts (default: CPUs available, %(default)s)")
    parser.add_argument("--fontsource", metavar="NAMES|arabic|default",
                        help="add Google Fonts families from npm's @fontsource/* packages (fetched with npm pack "
                             "into $GLYPH_TRAIN_CACHE/fontsource or ~/.cache/glyph-train/fontsource): package or "
                             "family names and the sets arabic (every Arabic-script family) and default "
                             "(180+ Latin families; also script and more, measured but not in the recipe: "
                             "BENCHMARKS.md §9h, §9k), comma-separated; a family already in OUT.db is not added "
                             "again")


def run(args: argparse.Namespace) -> int:
    summary = build_db(args.out, args.inputs, fontpkg=args.fontpkg, char_classes=args.charset, jobs=args.jobs,
                       progress=True, fontsource=args.fontsource)
    print(f"{args.out}: added {summary.fonts_added} fonts ({summary.fonts_present} already present, "
          f"{summary.fonts_skipped} skipped), {summary.glyphs} glyphs, {summary.labels} labels "
          f"in {summary.seconds:.1f} s ({summary.fonts_per_s:.1f} fonts/s)")
    if summary.fonts_added == summary.fonts_present == 0:
        raise GlyphTrainError(f"no usable fonts: all {summary.fonts_skipped} skipped (reasons above)")
    return 0


def build_db(out: Path, inputs: Sequence[str | Path], fontpkg: bool = False,
             char_classes: frozenset[str] | None = None, jobs: int = 1, progress: bool = False,
             warn: Callable[[str], None] | None = None, fontsource: str | None = None) -> BuildSummary:
    """Add every face of the input fonts not yet in `out`; `warn` gets one line per skipped font.
    `fontsource`: @fontsource package names / sets (glyph_train/corpus/fontsource.py) to add as well."""
    # tqdm.write keeps a skip line from tearing the progress bar.
    warn = warn or (lambda line: tqdm.write(f"glyph-train build-db: {line}", file=sys.stderr))
    start = time.perf_counter()
    # before touching OUT.db: bad inputs leave no file behind
    paths = find_font_files(inputs, fontpkg) if inputs or fontpkg or not fontsource else []
    check_outputs({"OUT.db": out}, {"font": paths})
    summary = BuildSummary()
    package_faces: list[FontFace] = []
    if fontsource:
        from glyph_train.corpus.fontsource import fontsource_faces
        package_faces, summary.fonts_skipped = fontsource_faces(fontsource, warn)
    conn = _open_output(out)
    try:
        known = {row[0] for row in conn.execute("SELECT file_hash FROM fonts")}
        faces: list[FontFace] = []
        for path in paths:
            try:
                listed = list_faces(path)
            except FontError as err:
                warn(f"skipped {path}: {err}")
                summary.fonts_skipped += 1
                continue
            for face in listed:
                if face.file_hash in known:
                    summary.fonts_present += 1
                else:
                    known.add(face.file_hash)
                    faces.append(face)
        if package_faces:
            from glyph_train.corpus.fontsource import add_package_faces
            summary.fonts_present += add_package_faces(conn, package_faces, faces, known, warn)
        statements = _insert_statements(conn)
        labels: set[str] = set()
        results = tqdm(_extract_all(faces, char_classes, jobs), total=len(faces), unit="font",
                       desc="build-db", disable=None if progress else True)  # None: only on a terminal
        for face, rows, error in results:
            if rows is None:
                warn(f"skipped {face.display_name}: {error}")
                summary.fonts_skipped += 1
                continue
            if not _add_face(conn, face, rows, *statements):
                summary.fonts_present += 1  # another build-db added it meanwhile
                continue
            summary.fonts_added += 1
            summary.glyphs += len(rows)
            labels.update(row[0] for row in rows)
        summary.labels = len(labels)
    finally:
        conn.close()
    summary.seconds = time.perf_counter() - start
    return summary


def font_glyph_rows(shaper: Shaper, char_classes: frozenset[str] | None = None) -> list[GlyphRow]:
    """One row per listed cmap character and positional form that draws something, and per figure variant."""
    rows: list[GlyphRow] = []
    for cp, gid in sorted(shaper.cmap().items()):
        if not is_listed(cp):
            continue
        cls = char_class(cp)
        if char_classes and cls not in char_classes:
            continue
        group = joining_group(cp)
        forms = forms_for(cp)
        for form in forms:
            # Joining letters are shaped, even isolated (fonts may substitute via 'isol'); others are drawn
            # straight from the cmap glyph.
            outline = shaper.glyph_outline(gid) if len(forms) == 1 else shaper.form_outline(cp, form)
            if outline:
                rows.append((label(cp, form), outline, group, cls))
        for feature, variant in shaper.figure_variants(cp):
            outline = shaper.glyph_outline(variant)
            if outline:
                rows.append((label(cp, feature), outline, group, cls))
    return rows


def extract_face(face: FontFace, char_classes: frozenset[str] | None = None
                 ) -> tuple[FontFace, list[GlyphRow] | None, str | None]:
    """Worker entry point: the face's glyph rows, or None and a one-line reason."""
    try:
        make_shaper = getattr(face, "shaper", None)  # a face of several files (fontsource) brings its own
        shaper = make_shaper() if make_shaper else Shaper(_sfnt(face.path), face.face_index, dict(face.coords))
        rows = font_glyph_rows(shaper, char_classes)
    except Exception as err:  # a font that breaks shaping/drawing is skipped, never the whole build
        return face, None, f"cannot shape or draw ({type(err).__name__}: {error_line(err)})"
    if not rows:  # not added: a font row without glyphs would only stop a later run from adding them
        return face, None, "no glyphs with outlines" + (" in --charset" if char_classes else "")
    return face, rows, None


@lru_cache(maxsize=2)  # consecutive instances of one variable font share the file's bytes
def _sfnt(path: Path) -> bytes:
    return sfnt_data(path)


def _extract_all(faces: list[FontFace], char_classes: frozenset[str] | None, jobs: int
                 ) -> Iterator[tuple[FontFace, list[GlyphRow] | None, str | None]]:
    """Results in input order (so glyph_ids do not depend on scheduling), from a process pool if it pays."""
    if jobs <= 1 or len(faces) <= 1:
        yield from map(extract_face, faces, repeat(char_classes))
        return
    # spawn: workers must not inherit a parent's threads (torch, a test runner) through fork.
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(faces)), mp_context=multiprocessing.get_context("spawn"))
    try:
        yield from pool.map(extract_face, faces, repeat(char_classes))
    except BrokenProcessPool:
        raise GlyphTrainError("a worker process died while reading fonts (a font crashed HarfBuzz?); "
                              "fonts added so far are kept: rerun with --jobs 1 to find the font") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _add_face(conn: sqlite3.Connection, face: FontFace, rows: list[GlyphRow], font_sql: str, glyph_sql: str,
              font_columns: tuple[str, ...]) -> bool:
    """Insert one face and its glyphs in one transaction; False when the face is already there. BEGIN
    IMMEDIATE takes the write lock before anything is read, so the presence check and the next glyph id hold
    against another process adding to the same DB."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("SELECT 1 FROM fonts WHERE file_hash = ?", (face.file_hash,)).fetchone():
            conn.execute("ROLLBACK")
            return False
        # Explicit ids rather than the rowid: a DB made elsewhere may not have glyph_id as its rowid.
        first = conn.execute("SELECT COALESCE(MAX(glyph_id), 0) + 1 FROM glyphs").fetchone()[0]
        conn.execute(font_sql, _font_values(face, font_columns))
        conn.executemany(glyph_sql, ((i, face.file_hash, *row) for i, row in enumerate(rows, first)))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return True


def _open_output(out: Path) -> sqlite3.Connection:
    """Open OUT.db read-write: a new file gets the schema; an existing one must already be a glyphs.db
    with the required columns (checked before anything is written, so no other SQLite file is touched).
    Its folder must be writable too: SQLite writes its journal beside the DB."""
    check_output_file(out, "OUT.db")
    try:
        # isolation_level=None: transactions are ours (_add_face), not the sqlite3 module's implicit ones.
        conn = sqlite3.connect(out, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as err:
        raise GlyphTrainError(f"{out}: cannot open as an SQLite database ({err}); choose another OUT.db") from None
    try:
        if tables and not {"fonts", "glyphs"} <= tables:
            raise GlyphTrainError(f"{out}: an SQLite file without fonts/glyphs tables; choose another OUT.db")
        for table, required in (("fonts", FONT_COLUMNS), ("glyphs", ("glyph_id", *GLYPH_COLUMNS))):
            missing = [c for c in required if tables and c not in _columns(conn, table)]
            if missing:
                raise GlyphTrainError(f"{out}: existing table {table} lacks columns {', '.join(missing)}; "
                                      "choose another OUT.db")
        # Both tables in one transaction: another build-db creating the same new OUT.db must never see `fonts`
        # without `glyphs` (it would refuse the file as not a glyphs.db).
        conn.executescript(f"BEGIN IMMEDIATE;{SCHEMA}COMMIT;")
    except BaseException:
        conn.close()
        raise
    return conn


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _insert_statements(conn: sqlite3.Connection) -> tuple[str, str, tuple[str, ...]]:
    # A DB made elsewhere may lack our optional columns: fill only those it has.
    existing = _columns(conn, "fonts")
    font_columns = FONT_COLUMNS + tuple(c for c in OPTIONAL_FONT_COLUMNS if c in existing)
    font_sql = f"INSERT INTO fonts ({', '.join(font_columns)}) VALUES ({', '.join('?' * len(font_columns))})"
    glyph_columns = ("glyph_id", *GLYPH_COLUMNS)
    glyph_sql = f"INSERT INTO glyphs ({', '.join(glyph_columns)}) VALUES ({', '.join('?' * len(glyph_columns))})"
    return font_sql, glyph_sql, font_columns


def _font_values(face: FontFace, columns: Iterable[str]) -> tuple:
    values = {"file_name": face.path.name, "source_path": str(face.path), "instance": face.instance}
    return tuple(values[c] if c in values else getattr(face, c) for c in columns)


def _char_classes(text: str) -> frozenset[str]:
    classes = frozenset(c.strip().lower() for c in text.split(",") if c.strip())
    unknown = sorted(classes - set(CHAR_CLASSES))
    if unknown or not classes:
        raise argparse.ArgumentTypeError(f"unknown char class {', '.join(unknown) or '(none)'}; "
                                         f"choose from {','.join(CHAR_CLASSES)}")
    return classes


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
