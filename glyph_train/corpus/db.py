"""Reading a glyphs.db: read-only open, schema validation, and glyph selection with filters.

Users' DBs are large (500k+ glyphs) and precious. They are opened with SQLite's read-only URI mode and
never written. Selection reads metadata only; contours are fetched later in chunks by whoever renders.

Filter order (each step counts what it removes, see `SelectionStats`):
  1. validity: rows whose font row is missing, fonts with `excluded = 1`, NULL labels, and NULL /
     invalid JSON / empty contours (checked in SQL with json_valid, cheap and without Python parsing);
  2. content filters: --char-classes, --labels, --exclude-shaped; with --others-per-label N, up to N rows of
     every label outside --labels stay as the one extra class OTHER_LABEL (see `_others`);
  3. --limit N: a deterministic sample, the N rows with the smallest keyed hash of (seed, glyph_id);
  4. --min-label-count / --drop-singletons: labels with too few rows in what is left are dropped.
So --limit samples first and the count threshold then applies to the data actually used.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sqlite3
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from glyph_train.corpus.font_rows import EmBox, em_box_from_metrics, family_from_file_name
from glyph_train.errors import GlyphTrainError
from glyph_train.flags import Flag, flag_field, flags_of

SQLITE_MAGIC = b"SQLite format 3\x00"
REQUIRED = {"fonts": ("file_hash",), "glyphs": ("glyph_id", "f_id", "label", "contours")}
# Optional columns and the value used where the DB lacks them (or holds NULL).
OPTIONAL_GLYPH = {"joining_group": "NO_JOIN", "char_class": "other"}
OPTIONAL_FONT = ("family_name", "style_name", "upem", "ascent", "descent", "typo_ascent", "typo_descent",
                 "excluded", "file_name")
SHAPED_SUFFIX = "_shaped"
# The class of glyphs drawing none of the --labels (--others-per-label): what teaches a closed label set to
# say "none of mine". Angle brackets: never a `{code point}_{form}` label.
OTHER_LABEL = "<other>"
# A label drawn with the very outline of a kept label (same contours, same font) in more than this share of
# the fonts that draw it (Cyrillic а for a, Greek Ο for O, Farsi yeh for alef maksura) is a homoglyph: as
# OTHER_LABEL it would teach that a's drawing is not an a. Measured on the fontpkg + @fontsource corpus, such
# labels sit at 5-100 %, distinct letters under 5 % (shared placeholder outlines).
HOMOGLYPH_SHARE = 0.05
FETCH_CHUNK = 512


# ---------------------------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class GlyphFilter:
    """Which rows of a glyphs.db a command uses; each field is also the flag that sets it (the flag's text:
    comma lists and --labels files, parsed by `filter_from_args`)."""

    limit: int | None = flag_field(None, "deterministic sample of N glyphs chosen by --seed", type=int, metavar="N")
    seed: int = flag_field(0, "seed of every random choice the command makes (--limit or --random sample, "
                              "split, init, augmentation)")
    exclude_shaped: bool = flag_field(False, "leave out labels ending in _shaped")
    min_label_count: int = flag_field(1, "drop labels with fewer than N glyphs", metavar="N")
    drop_singletons: bool = flag_field(False, "drop labels with a single glyph (= --min-label-count 2)")
    char_classes: tuple[str, ...] | None = flag_field(None, "keep only these char_class values (comma list)",
                                                      metavar="A,B")
    labels: tuple[str, ...] | None = flag_field(None, "keep only these labels: a comma list or a file, one per line",
                                                metavar="LIST|FILE")
    others_per_label: int = flag_field(
        0, f"with --labels: also keep up to N glyphs of every other label (homoglyphs of kept labels excepted) "
           f"as one extra class {OTHER_LABEL}, so the model learns what is none of its labels (label-font "
           f"then leaves such glyphs unknown instead of giving them a look-alike's label); 0 = off", metavar="N")

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise GlyphTrainError(f"--limit must be at least 1, got {self.limit}")
        if self.min_label_count < 1:
            raise GlyphTrainError(f"--min-label-count must be at least 1, got {self.min_label_count}")
        if self.others_per_label < 0:
            raise GlyphTrainError(f"--others-per-label must be 0 (off) or more, got {self.others_per_label}")
        if self.others_per_label and not self.labels:
            raise GlyphTrainError("--others-per-label needs --labels: the other class is every label outside that list")

    @property
    def min_count(self) -> int:
        return max(self.min_label_count, 2 if self.drop_singletons else 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("char_classes", "labels"):
            d[k] = sorted(d[k]) if d[k] is not None else None  # order of a list flag has no meaning
        return d


FILTER_FLAGS = flags_of(GlyphFilter)
# The glyphs.db a command reads; `train --db` and `embed --db` are their own flags (other roles).
DB_FLAG = Flag("--db", "glyphs.db to read (opened read-only)", type=Path)


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("glyph selection (applied in this order: validity, classes/labels/shaped, "
                                  "--limit sample, --min-label-count)")
    for flag in FILTER_FLAGS.values():
        flag.add(g)


def other_class(label_names: Sequence[str]) -> int | None:
    """Index of OTHER_LABEL among a model's labels, None when it has no other class."""
    return list(label_names).index(OTHER_LABEL) if OTHER_LABEL in label_names else None


def parse_label_list(value: str | None) -> tuple[str, ...] | None:
    """A comma list, or a path to a file with one label per line (blank lines and #comments ignored)."""
    if value is None:
        return None
    path = Path(value)
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8-sig")  # -sig: a leading BOM (Windows editors) is no label
        except UnicodeDecodeError as err:
            raise GlyphTrainError(f"labels file {path} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at "
                                  f"offset {err.start}); save it as UTF-8, one label per line") from None
        items = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    elif "/" in value or value.endswith(".txt"):
        raise GlyphTrainError(f"labels file {value} not found")
    else:
        items = [s.strip() for s in value.split(",")]
    labels = tuple(dict.fromkeys(s for s in items if s))  # dedupe, keep order
    if not labels:
        raise GlyphTrainError(f"--labels {value!r} names no labels")
    return labels


def filter_from_args(args: object) -> GlyphFilter:
    """The GlyphFilter of parsed flags: an argparse Namespace or a TrainConfig (same names); flags the
    command does not take keep their defaults."""
    values = {name: getattr(args, name) for name in FILTER_FLAGS if hasattr(args, name)}
    classes = dict.fromkeys(s.strip() for s in (values.get("char_classes") or "").split(",") if s.strip())
    values["char_classes"] = tuple(classes) or None
    values["labels"] = parse_label_list(values.get("labels"))
    return GlyphFilter(**values)


# ---------------------------------------------------------------------------------------------- opening


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """Open a glyphs.db read-only after checking it is a SQLite file with the tables and columns we read."""
    path = Path(path)
    if not path.exists():
        raise GlyphTrainError(f"{path}: no such file")
    if not path.is_file():
        raise GlyphTrainError(f"{path}: is a directory, not a glyphs.db file")
    with open(path, "rb") as f:
        head = f.read(len(SQLITE_MAGIC))
    if not head:
        raise GlyphTrainError(f"{path}: empty file (0 bytes), not a glyphs.db")
    if head != SQLITE_MAGIC:
        raise GlyphTrainError(f"{path}: not a SQLite database")
    # mode=ro: SQLite refuses every write; works with WAL DBs as long as the -shm can be read.
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    except sqlite3.DatabaseError as e:
        raise GlyphTrainError(f"{path}: cannot open read-only ({e})") from None
    try:
        _check_schema(conn, path)
    except sqlite3.DatabaseError as e:
        conn.close()
        raise GlyphTrainError(f"{path}: cannot read as SQLite ({e})") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _check_schema(conn: sqlite3.Connection, path: Path) -> None:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table','view')")}
    missing_tables = [t for t in REQUIRED if t not in tables]
    if missing_tables:
        raise GlyphTrainError(f"{path}: missing table(s) {', '.join(missing_tables)}; is this a glyphs.db?")
    for table, cols in REQUIRED.items():
        have = table_columns(conn, table)
        missing = [c for c in cols if c not in have]
        if missing:
            raise GlyphTrainError(f"{path}: table {table} lacks column(s) {', '.join(missing)}")
    if conn.execute("SELECT 1 FROM glyphs LIMIT 1").fetchone() is None:
        raise GlyphTrainError(f"{path}: the glyphs table is empty; build it with `glyph-train build-db`")


def table_columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


# ---------------------------------------------------------------------------------------------- selection


@dataclass(frozen=True, slots=True)
class GlyphMeta:
    glyph_id: int
    font: str  # fonts.file_hash
    family: str  # fonts.family_name, else derived from fonts.file_name, else the font hash
    label: str
    joining_group: str
    char_class: str
    em: EmBox
    style: str = ""


@dataclass
class SelectionStats:
    rows: int = 0  # rows in the glyphs table
    missing_font: int = 0  # f_id names no fonts row
    excluded_font: int = 0  # rows of fonts with excluded = 1
    excluded_fonts: int = 0  # number of such fonts
    null_label: int = 0
    null_contours: int = 0
    invalid_contours: int = 0  # not JSON, or JSON but not a list
    empty_contours: int = 0
    char_class_filtered: int = 0
    label_filtered: int = 0
    unknown_labels: int = 0  # --labels entries found nowhere in the DB
    others: int = 0  # rows kept as OTHER_LABEL (--others-per-label), counted in `selected`
    other_labels: int = 0  # labels they come from
    homoglyph_labels: int = 0  # labels left out of OTHER_LABEL as homoglyphs of kept labels
    shaped_filtered: int = 0
    limit_dropped: int = 0
    min_count_dropped: int = 0
    min_count_labels: int = 0  # labels dropped by the count threshold
    selected: int = 0
    family_from_file_name: int = 0  # fonts with NULL family_name whose family came from the file name
    family_from_hash: int = 0  # fonts with neither: each is its own family

    SKIPS = ("missing_font", "excluded_font", "null_label", "null_contours", "invalid_contours", "empty_contours")
    FILTERS = ("char_class_filtered", "label_filtered", "shaped_filtered", "limit_dropped", "min_count_dropped")

    def summary(self) -> str:
        def part(names: Sequence[str]) -> str:
            items = [f"{getattr(self, n):,} {n.replace('_', ' ')}" for n in names if getattr(self, n)]
            return ", ".join(items) or "none"

        line = f"selected {self.selected:,} of {self.rows:,} glyph rows; skipped: {part(self.SKIPS)}; " \
               f"filtered: {part(self.FILTERS)}"
        if self.excluded_fonts:
            line += f"; {self.excluded_fonts} excluded font(s)"
        if self.min_count_labels:
            line += f"; {self.min_count_labels} label(s) under the count threshold"
        if self.unknown_labels:
            line += f"; {self.unknown_labels} requested label(s) not in the DB"
        if self.others:
            line += (f"; {self.others:,} glyph(s) of {self.other_labels:,} other label(s) kept as {OTHER_LABEL} "
                     f"({self.homoglyph_labels} homoglyph label(s) left out)")
        if self.family_from_file_name:
            line += f"; {self.family_from_file_name} font(s) without family_name: family taken from the file name"
        if self.family_from_hash:
            line += f"; {self.family_from_hash} font(s) without family_name or file_name: each is its own family"
        return line

    def to_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Selection:
    db: Path
    glyphs: list[GlyphMeta]  # ascending glyph_id
    stats: SelectionStats
    # sha256 over every selected row's metadata and contours text; None unless asked for (a full read)
    content_hash: str | None = None
    label_counts: Counter = field(default_factory=Counter)

    @property
    def skipped(self) -> dict[str, int]:
        """Rows left out as unusable (not by a filter), by reason; zero counts omitted."""
        return {k: getattr(self.stats, k) for k in SelectionStats.SKIPS if getattr(self.stats, k)}


def _font_rows(conn: sqlite3.Connection) -> dict[str, tuple[str, str, EmBox, bool, str, str]]:
    """file_hash -> (family, style, em box, excluded, file_hash, where the family came from: name, file or
    hash); rows share these objects."""
    have = table_columns(conn, "fonts")
    # `excluded = 1` evaluated by SQLite, exactly as users query it (whatever type the column holds)
    cols = ", ".join(("COALESCE(excluded = 1, 0)" if c == "excluded" else c) if c in have else "NULL"
                     for c in OPTIONAL_FONT)
    out = {}
    for h, family, style, upem, asc, desc, tasc, tdesc, excluded, file_name in conn.execute(
            f"SELECT file_hash, {cols} FROM fonts"):
        if h is None:
            continue
        em = em_box_from_metrics(upem, asc, desc, tasc, tdesc)
        h = str(h)
        # without a family name every style would be its own family, and styles of one family could land
        # on both sides of the font split
        source, family = ("name", str(family)) if family else ("file", family_from_file_name(file_name))
        if family is None:
            source, family = "hash", h
        out[h] = (family, str(style or ""), em, bool(excluded), h, source)
    return out


# json_valid parses the text once; SQLite keeps that parse for the json_type/json_array_length calls
# on the same value, so the three checks cost about one parse per row.
_STATUS_SQL = """CASE WHEN contours IS NULL THEN 1
     WHEN NOT json_valid(contours) THEN 2
     WHEN json_type(contours) <> 'array' THEN 2
     WHEN json_array_length(contours) = 0 THEN 3
     ELSE 0 END"""


def _keyed_rank(glyph_ids: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of glyph_id under a seed-derived key: a fixed pseudo-random order, a bijection (no ties)."""
    key = np.uint64(int.from_bytes(hashlib.sha256(f"glyph-train-limit:{seed}".encode()).digest()[:8], "little"))
    with np.errstate(over="ignore"):
        z = glyph_ids.astype(np.uint64) + key
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def select_glyphs(path: str | Path, flt: GlyphFilter = GlyphFilter(), *, hash_content: bool = False) -> Selection:
    """Metadata of the rows that pass `flt`, ascending glyph_id, with counts of everything left out.

    hash_content=True also hashes every surviving row's contours text in the same pass (no second read of
    the DB) so that prepare's cache key covers the content, not just the ids.
    """
    path = Path(path)
    conn = open_readonly(path)
    try:
        return _select(conn, path, flt, hash_content)
    except sqlite3.DatabaseError as e:
        raise GlyphTrainError(f"{path}: read failed ({e})") from None
    finally:
        conn.close()


def _select(conn: sqlite3.Connection, path: Path, flt: GlyphFilter, hash_content: bool) -> Selection:
    stats = SelectionStats()
    fonts = _font_rows(conn)
    stats.excluded_fonts = sum(1 for f in fonts.values() if f[3])
    stats.family_from_file_name = sum(1 for f in fonts.values() if f[5] == "file" and not f[3])
    stats.family_from_hash = sum(1 for f in fonts.values() if f[5] == "hash" and not f[3])
    have = table_columns(conn, "glyphs")
    opt = ", ".join(f"COALESCE({c}, '{d}')" if c in have else f"'{d}'" for c, d in OPTIONAL_GLYPH.items())
    read_contours = hash_content or flt.others_per_label > 0  # others compare outlines with the kept ones
    sql = f"SELECT glyph_id, f_id, label, {opt}, {_STATUS_SQL}{', contours' if read_contours else ''} " \
          f"FROM glyphs ORDER BY glyph_id"
    classes = set(flt.char_classes) if flt.char_classes else None
    wanted = set(flt.labels) if flt.labels else None
    seen_wanted: set[str] = set()
    kept: list[GlyphMeta] = []
    digests: dict[int, bytes] = {}
    intern: dict[str, str] = {}  # for _meta: 500k rows, few distinct values
    others: list[tuple[GlyphMeta, bytes]] = []  # candidates for OTHER_LABEL, with their outline digest

    for row in conn.execute(sql):
        stats.rows += 1
        gid, f_id, label, jg, cc, status = row[:6]
        font = fonts.get(str(f_id)) if f_id is not None else None
        if font is None:
            stats.missing_font += 1
            continue
        if font[3]:
            stats.excluded_font += 1
            continue
        if label is None or gid is None:
            stats.null_label += 1
            continue
        if status:
            if status == 1:
                stats.null_contours += 1
            elif status == 2:
                stats.invalid_contours += 1
            else:
                stats.empty_contours += 1
            continue
        label = str(label)
        if classes is not None and cc not in classes:
            stats.char_class_filtered += 1
            continue
        shaped = label.endswith(SHAPED_SUFFIX)
        if wanted is not None:
            if label not in wanted:
                stats.label_filtered += 1
                if flt.others_per_label and not (flt.exclude_shaped and shaped):
                    others.append((_meta(gid, font, label, jg, cc, intern), _digest(row[6])))
                continue
            seen_wanted.add(label)
        if flt.exclude_shaped and shaped:
            stats.shaped_filtered += 1
            continue
        kept.append(_meta(gid, font, label, jg, cc, intern))
        if read_contours:
            digests[int(gid)] = _digest(row[6])
    if wanted is not None:
        stats.unknown_labels = len(wanted - seen_wanted)
    if others:
        chosen = _others(others, {(g.font, digests[g.glyph_id]) for g in kept}, flt, stats)
        stats.label_filtered -= len(chosen)
        digests.update((g.glyph_id, d) for g, d in chosen)
        kept = sorted(kept + [g for g, _ in chosen], key=lambda g: g.glyph_id)

    if flt.limit is not None and len(kept) > flt.limit:
        ranks = _keyed_rank(np.fromiter((g.glyph_id for g in kept), dtype=np.int64, count=len(kept)), flt.seed)
        take = np.sort(np.argpartition(ranks, flt.limit - 1)[: flt.limit])  # back to glyph_id order
        stats.limit_dropped = len(kept) - flt.limit
        kept = [kept[i] for i in take]

    counts = Counter(g.label for g in kept)
    if flt.min_count > 1:
        rare = {lab for lab, n in counts.items() if n < flt.min_count}
        if rare:
            stats.min_count_labels = len(rare)
            stats.min_count_dropped = sum(counts[lab] for lab in rare)
            kept = [g for g in kept if g.label not in rare]
            for lab in rare:
                del counts[lab]
    stats.selected = len(kept)

    content_hash = None
    if hash_content:
        h = hashlib.sha256()
        for g in kept:
            h.update(f"{g.glyph_id}\x1f{g.font}\x1f{g.family}\x1f{g.style}\x1f{g.label}\x1f{g.joining_group}\x1f"
                     f"{g.char_class}\x1f{g.em.upem},{g.em.ascent},{g.em.descent}\x1e".encode())
            h.update(digests[g.glyph_id])
        content_hash = h.hexdigest()
    return Selection(path, kept, stats, content_hash, counts)


def _meta(gid: int, font: tuple, label: str, jg: str, cc: str, intern: dict[str, str]) -> GlyphMeta:
    """A selected row's metadata; `intern` keeps one str object per distinct label / group / class."""
    label, jg, cc = intern.setdefault(label, label), intern.setdefault(jg, str(jg)), intern.setdefault(cc, str(cc))
    return GlyphMeta(int(gid), font[4], font[0], label, jg, cc, font[2], font[1])


def _digest(text: str | bytes) -> bytes:
    return hashlib.blake2b(text.encode() if isinstance(text, str) else bytes(text), digest_size=16).digest()


def _others(candidates: list[tuple[GlyphMeta, bytes]], kept_outlines: set[tuple[str, bytes]], flt: GlyphFilter,
            stats: SelectionStats) -> list[tuple[GlyphMeta, bytes]]:
    """Up to --others-per-label rows of each non-homoglyph label outside --labels (a seeded sample, as
    --limit's), relabelled OTHER_LABEL; per label, so that rare scripts' letters are as present as
    accented Latin. `kept_outlines`: (font, outline digest) of every kept row."""
    by_label: dict[str, list[tuple[GlyphMeta, bytes]]] = {}
    same: Counter = Counter()
    for meta, digest in candidates:
        by_label.setdefault(meta.label, []).append((meta, digest))
        same[meta.label] += (meta.font, digest) in kept_outlines
    chosen: list[tuple[GlyphMeta, bytes]] = []
    for label, rows in by_label.items():
        # rows per label ~ fonts that draw it: the homoglyph share is per font
        if same[label] > HOMOGLYPH_SHARE * len(rows):
            stats.homoglyph_labels += 1
            continue
        if len(rows) > flt.others_per_label:
            ranks = _keyed_rank(np.fromiter((g.glyph_id for g, _ in rows), dtype=np.int64, count=len(rows)), flt.seed)
            rows = [rows[i] for i in np.argpartition(ranks, flt.others_per_label - 1)[: flt.others_per_label]]
        chosen += [(dataclasses.replace(g, label=OTHER_LABEL), d) for g, d in rows]
        stats.other_labels += 1
    stats.others = len(chosen)
    return chosen


def fetch_contours(conn: sqlite3.Connection, glyph_ids: Sequence[int]) -> dict[int, str]:
    """Contours text of the given glyph ids (missing ids are absent from the result)."""
    out: dict[int, str] = {}
    ids = list(glyph_ids)
    for i in range(0, len(ids), FETCH_CHUNK):
        chunk = ids[i: i + FETCH_CHUNK]
        # One JSON array parameter instead of N placeholders: no SQLITE_MAX_VARIABLE_NUMBER limit.
        q = "SELECT glyph_id, contours FROM glyphs WHERE glyph_id IN (SELECT value FROM json_each(?))"
        for gid, text in conn.execute(q, (f"[{','.join(str(int(g)) for g in chunk)}]",)):
            out[int(gid)] = text if isinstance(text, str) or text is None else bytes(text).decode("utf-8", "replace")
    return out


def iter_contours(path: str | Path, glyph_ids: Sequence[int],
                  chunk: int = FETCH_CHUNK) -> Iterator[tuple[int, str | None]]:
    """(glyph_id, contours text) in the given order, fetched `chunk` rows at a time on an own connection."""
    conn = open_readonly(path)
    try:
        ids = list(glyph_ids)
        for i in range(0, len(ids), chunk):
            part = ids[i: i + chunk]
            got = fetch_contours(conn, part)
            for gid in part:
                yield gid, got.get(gid)
    finally:
        conn.close()
