"""Test helper: write a small glyphs.db in the users' schema straight from real font outlines.

Independent of build_db.py on purpose: the reader is tested against the users' schema as documented,
not against whatever our own builder happens to write. Outlines come from fontTools'
DecomposingRecordingPen on installed fontpkg fonts (variable fonts at named-instance locations);
Arabic positional forms come from the fonts' presentation-form cmap entries (no shaping needed here).
Optional extras: deliberately bad rows, an excluded font, orphan rows and `_shaped` labels.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sqlite3
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from fontTools.pens.recordingPen import DecomposingRecordingPen
from fontTools.ttLib import TTFont

SCHEMA = """
CREATE TABLE fonts (
    file_hash TEXT PRIMARY KEY, file_name TEXT, family_name TEXT, style_name TEXT, upem INTEGER,
    ascent INTEGER, descent INTEGER, line_gap INTEGER, typo_ascent INTEGER, typo_descent INTEGER,
    x_height INTEGER, cap_height INTEGER, excluded INTEGER DEFAULT 0);
CREATE TABLE glyphs (
    glyph_id INTEGER UNIQUE, f_id TEXT REFERENCES fonts(file_hash), label TEXT, contours TEXT,
    joining_group TEXT, char_class TEXT);
"""


@dataclass(frozen=True)
class FontSpec:
    package: str  # fontpkg module
    file: str  # file name under files/
    style: str  # named instance subfamily (variable fonts) or the style of a static file; "" = from the font
    location: tuple[tuple[str, float], ...] = ()


# Five families, two of them with two instances; two cover Arabic: enough for a family-disjoint split to mean something.
DEFAULT_FONTS = (
    FontSpec("fontpkg_roboto", "Roboto[wdth,wght].ttf", "Regular", (("wght", 400.0), ("wdth", 100.0))),
    FontSpec("fontpkg_roboto", "Roboto[wdth,wght].ttf", "Bold", (("wght", 700.0), ("wdth", 100.0))),
    FontSpec("fontpkg_lora", "Lora[wght].ttf", "Regular", (("wght", 400.0),)),
    FontSpec("fontpkg_lora", "Lora[wght].ttf", "Bold", (("wght", 700.0),)),
    FontSpec("fontpkg_amiri", "Amiri-Regular.ttf", "Regular"),
    FontSpec("fontpkg_inter", "Inter[opsz,wght].ttf", "Regular", (("opsz", 14.0), ("wght", 400.0))),
    FontSpec("fontpkg_noto_sans_arabic", "NotoSansArabic[wdth,wght].ttf", "Regular",
             (("wght", 400.0), ("wdth", 100.0))),
)
LATIN = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.,!?&"
# beh, teh, hah, seen, ain, lam, meem, heh, yeh (dual-joining) and alef, dal, reh, waw (right-joining)
ARABIC = (0x0628, 0x062A, 0x062D, 0x0633, 0x0639, 0x0644, 0x0645, 0x0647, 0x064A, 0x0627, 0x062F, 0x0631, 0x0648)
JOINING_GROUP = {0x0628: "BEH", 0x062A: "BEH", 0x062D: "HAH", 0x0633: "SEEN", 0x0639: "AIN", 0x0644: "LAM",
                 0x0645: "MEEM", 0x0647: "HEH", 0x064A: "YEH", 0x0627: "ALEF", 0x062F: "DAL", 0x0631: "REH",
                 0x0648: "WAW"}
_FORM_TAGS = {"<isolated>": "isol", "<initial>": "init", "<medial>": "medi", "<final>": "fina"}

# Contours that SQL-level validation catches (reason -> text) and ones that only fail when rendered.
BAD_CONTOURS = {"null_contours": [None], "invalid_contours": ["not json", "{\"a\": 1}", "[[[\"moveTo\""],
                "empty_contours": ["[]"]}
RENDER_BAD_CONTOURS = ["[[[\"bogus\", [[1, 2]]]]]", "[[[\"lineTo\", [[1]]]]]", "[[]]"]


@dataclass
class DBInfo:
    path: Path
    rows: int = 0  # all glyph rows written
    good: int = 0  # rows a reader should select with no filters
    labels: set[str] = field(default_factory=set)
    families: set[str] = field(default_factory=set)
    fonts: dict[str, str] = field(default_factory=dict)  # file_hash -> "Family Style"
    bad: dict[str, int] = field(default_factory=dict)  # skip reason -> rows
    render_bad: int = 0
    excluded_rows: int = 0
    shaped_rows: int = 0


def fontpkg_specs() -> list[FontSpec]:
    """Every installed fontpkg font file at its default location (benchmarks: a bigger, varied DB)."""
    from importlib.metadata import entry_points

    specs = []
    for ep in sorted(entry_points(group="fontpkg.family"), key=lambda e: e.name):
        files = Path(importlib.import_module(ep.value).__file__).parent / "files"
        for f in sorted(files.glob("*.[ot]tf")):
            specs.append(FontSpec(ep.value, f.name, ""))  # style read from the font's name table
    return specs


def font_path(spec: FontSpec) -> Path:
    return Path(importlib.import_module(spec.package).__file__).parent / "files" / spec.file


def presentation_forms() -> dict[tuple[int, str], int]:
    """(base code point, form) -> presentation form code point, from Unicode's decompositions."""
    out = {}
    for cp in range(0xFE70, 0xFEFF):
        tag, _, rest = unicodedata.decomposition(chr(cp)).partition(" ")
        if tag in _FORM_TAGS and rest and " " not in rest:
            out[(int(rest, 16), _FORM_TAGS[tag])] = cp
    return out


def char_class(cp: int) -> str:
    ch = chr(cp)
    cat = unicodedata.category(ch)
    if cat.startswith("M"):
        return "diacritic"
    if cat == "Nd":
        return "digit"
    if cat.startswith("P"):
        return "punctuation"
    if cat.startswith("S"):
        return "symbol"
    name = unicodedata.name(ch, "")
    for script in ("arabic", "latin", "greek", "cyrillic"):
        if script.upper() in name:
            return script
    return "other"


def pen_to_contours(value: list) -> list:
    """RecordingPen value -> the users' JSON structure: subpaths of [op, payload], where moveTo/lineTo
    carry ONE point [x, y], curveTo/qCurveTo a list of points, closePath null."""
    subpaths, cur = [], []
    for op, args in value:
        if op == "moveTo" and cur:
            subpaths.append(cur)
            cur = []
        if op in ("closePath", "endPath"):
            if op == "closePath":
                cur.append(["closePath", None])
            subpaths.append(cur)
            cur = []
            continue
        points = [None if p is None else [round(p[0], 2), round(p[1], 2)] for p in args]
        cur.append([op, points[0] if op in ("moveTo", "lineTo") else points])
    if cur:
        subpaths.append(cur)
    return subpaths


def glyph_contours(font: TTFont, glyphset, cp: int) -> str | None:
    name = font.getBestCmap().get(cp)
    if name is None:
        return None
    pen = DecomposingRecordingPen(glyphset)
    glyphset[name].draw(pen)
    contours = pen_to_contours(pen.value)
    return json.dumps(contours, separators=(",", ":")) if contours else None


def font_rows(spec: FontSpec) -> tuple[dict, TTFont, object]:
    path = font_path(spec)
    font = TTFont(path)
    glyphset = font.getGlyphSet(location=dict(spec.location)) if spec.location else font.getGlyphSet()
    digest = hashlib.sha256(path.read_bytes() + repr(spec.location).encode()).hexdigest()
    os2, hhea = font["OS/2"], font["hhea"]
    name = font["name"]
    row = dict(file_hash=digest, file_name=path.name, family_name=name.getDebugName(16) or name.getDebugName(1),
               style_name=spec.style or name.getDebugName(17) or name.getDebugName(2),
               upem=font["head"].unitsPerEm, ascent=hhea.ascent, descent=hhea.descent,
               line_gap=hhea.lineGap, typo_ascent=os2.sTypoAscender, typo_descent=os2.sTypoDescender,
               x_height=getattr(os2, "sxHeight", None), cap_height=getattr(os2, "sCapHeight", None), excluded=0)
    return row, font, glyphset


def write_db(path: str | Path, fonts=DEFAULT_FONTS, latin: str = LATIN, arabic=ARABIC, *, bad_rows: bool = False,
             exclude_font: bool = False, shaped: bool = False, orphan_rows: bool = False,
             null_family: bool = False) -> DBInfo:
    """Write a glyphs.db; flags add rows a reader must skip (bad_rows, exclude_font, orphan_rows) or that a
    filter targets (shaped: `<label>_shaped` copies of some Arabic rows). null_family leaves family_name NULL."""
    path = Path(path)
    info = DBInfo(path)
    forms = presentation_forms()
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    gid = 0

    def add(f_id, label, contours, jg, cc):
        nonlocal gid
        gid += 1
        conn.execute("INSERT INTO glyphs VALUES (?,?,?,?,?,?)", (gid * 7 + 3, f_id, label, contours, jg, cc))
        info.rows += 1

    specs = list(fonts)
    if exclude_font:  # an extra font flagged excluded: every one of its rows must be left out
        specs.append(FontSpec("fontpkg_roboto", "Roboto[wdth,wght].ttf", "Light", (("wght", 300.0), ("wdth", 100.0))))
    for n, spec in enumerate(specs):
        row, font, glyphset = font_rows(spec)
        excluded = exclude_font and n == len(specs) - 1
        row["excluded"] = 1 if excluded else 0
        if null_family:
            row["family_name"] = None
        conn.execute(f"INSERT INTO fonts ({','.join(row)}) VALUES ({','.join('?' * len(row))})", list(row.values()))
        f_id = row["file_hash"]
        info.fonts[f_id] = f"{row['family_name']} {row['style_name']}"
        items = [(ord(c), f"{ord(c)}_isol", ord(c), "NO_JOIN") for c in latin]
        for cp in arabic:
            for form in ("isol", "init", "medi", "fina"):
                pf = forms.get((cp, form))
                if pf is not None:
                    items.append((cp, f"{cp}_{form}", pf, JOINING_GROUP.get(cp, "NO_JOIN")))
        for cp, label, draw_cp, jg in items:
            contours = glyph_contours(font, glyphset, draw_cp)
            if contours is None:
                continue
            add(f_id, label, contours, jg, char_class(cp))
            if excluded:
                info.excluded_rows += 1
                continue
            info.good += 1
            info.labels.add(label)
            info.families.add(row["family_name"] or f_id)
            if shaped and label.endswith("_init"):
                add(f_id, label + "_shaped", contours, jg, char_class(cp))
                info.shaped_rows += 1
                info.good += 1
                info.labels.add(label + "_shaped")
    first_font = next(iter(info.fonts))
    if bad_rows:
        for reason, texts in BAD_CONTOURS.items():
            for text in texts:
                add(first_font, "65_isol", text, "NO_JOIN", "latin")
            info.bad[reason] = len(texts)
        for text in RENDER_BAD_CONTOURS:
            add(first_font, "66_isol", text, "NO_JOIN", "latin")
        info.render_bad = len(RENDER_BAD_CONTOURS)
        info.good += info.render_bad  # they pass SQL validation; rendering drops them
    if orphan_rows:
        for _ in range(2):
            add("no-such-font-hash", "65_isol", '[[["moveTo",[0,0]],["lineTo",[100,0]],["lineTo",[0,100]]]]',
                "NO_JOIN", "latin")
        info.bad["missing_font"] = 2
    conn.commit()
    conn.close()
    return info


def write_empty_db(path: str | Path) -> Path:
    """The schema with no glyphs."""
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.commit()
    conn.close()
    return Path(path)


def write_db_without(path: str | Path, table: str, columns: tuple[str, ...]) -> Path:
    """A one-glyph DB whose `table` lacks `columns` (or lacks the table itself when columns is empty)."""
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.execute("INSERT INTO fonts (file_hash, family_name) VALUES ('h', 'F')")
    conn.execute("INSERT INTO glyphs VALUES (1, 'h', '65_isol', '[[[\"moveTo\",[0,0]],[\"lineTo\",[9,9]]]]', "
                 "'NO_JOIN', 'latin')")
    if columns:
        for col in columns:
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {col}")
    else:
        conn.execute(f"DROP TABLE {table}")
    conn.commit()
    conn.close()
    return Path(path)
