"""Glyphs for inference, from a glyphs.db (read-only) or straight from font files.

From a font file every glyph counts, by glyph id and name, whether or not the cmap maps it: HarfBuzz draws
it with components decomposed (shaping.Shaper), into the same contours JSON the DB holds. Glyph 0
(.notdef by the OpenType spec) is left out. `known_labels` reads what a font's own cmap and GSUB say
a glyph is: metadata for embed/search and the ground truth of benchmarks, never evidence for label-font.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from fontTools.ttLib import TTFont

from glyph_train.corpus.font_rows import EmBox, em_box_from_metrics
from glyph_train.corpus.fonts import FontError, FontFace, list_faces, sfnt_data
from glyph_train.corpus.shaping import Shaper
from glyph_train.corpus.unicode_data import forms_for, is_listed, label as make_label
from glyph_train.errors import GlyphTrainError


@dataclass(frozen=True)
class GlyphRecord:
    """One glyph to embed or label, with what the index's metadata table keeps about it."""

    source: str  # "db" or "font"
    font: str  # the face's hash (fonts.file_hash for DB rows)
    font_file: str  # file path for fonts, the DB's file_name (else '') for DB rows
    face_index: int
    instance: str  # variable-font location ('' if static)
    family: str
    style: str
    glyph: str  # glyph name (fonts); '' for DB rows
    glyph_id: int  # glyph id in the font, or the DB's glyph_id
    label: str  # known label ('' if unknown)
    contours: str
    em: EmBox

    @property
    def outline_hash(self) -> str:
        return outline_hash(self.contours)


def outline_hash(contours: str) -> str:
    return hashlib.blake2b(contours.encode(), digest_size=16).hexdigest()


# ---------------------------------------------------------------------------------------------- fonts


def font_faces(path: Path) -> list[FontFace]:
    """Every face of a font file (TTC members, named instances), with or without a cmap."""
    try:
        return list_faces(path, require_cmap=False)
    except FontError as err:
        raise GlyphTrainError(f"{path}: {err}") from None


def default_face(path: Path) -> FontFace:
    """The face label-font reads: a static font itself, or the variable font's instance at its default
    location (else its first named instance)."""
    faces = font_faces(path)
    if len(faces) > 1 and faces[0].coords:
        font = TTFont(path, lazy=True)
        if "fvar" in font:
            default = {a.axisTag: a.defaultValue for a in font["fvar"].axes}
            for face in faces:
                if dict(face.coords) == default:
                    return face
    return faces[0]


def face_em(face: FontFace) -> EmBox:
    return em_box_from_metrics(face.upem, face.ascent, face.descent, face.typo_ascent, face.typo_descent)


def face_shaper(face: FontFace) -> Shaper:
    return Shaper(sfnt_data(face.path), face.face_index, dict(face.coords))


def glyph_names(face: FontFace) -> list[str]:
    font = TTFont(face.path, fontNumber=face.face_index if _is_collection(face.path) else -1, lazy=True)
    return font.getGlyphOrder()


def _is_collection(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"ttcf"


def face_glyphs(face: FontFace, with_labels: bool = True) -> tuple[list[GlyphRecord], list[str]]:
    """(records of every glyph of the face that draws something, names of the glyphs that draw nothing)."""
    shaper = face_shaper(face)
    names = glyph_names(face)
    labels = known_labels(shaper) if with_labels else {}
    em = face_em(face)
    records, empty = [], []
    for gid in range(1, len(names)):
        contours = shaper.glyph_outline(gid)
        if not contours:
            empty.append(names[gid])
            continue
        records.append(GlyphRecord("font", face.file_hash, str(face.path), face.face_index, face.instance or "",
                                   face.family_name, face.style_name, names[gid], gid, labels.get(gid, ""),
                                   contours, em))
    return records, empty


def known_labels(shaper: Shaper) -> dict[int, str]:
    """glyph id -> label the font itself gives it, for the glyphs that draw something: cmap glyphs are
    `{cp}_isol`, and so is the one glyph a joining letter shaped alone becomes when that is another (an isol
    substitution: Noto Nastaliq Urdu's cmap glyphs draw nothing, its isol feature gives the letter; build-db
    draws that glyph too); a joining letter's other positional forms are the single glyphs HarfBuzz shapes it
    to in a ZWJ context (when they differ from the cmap glyph), and a digit's figure variants are
    `{cp}_{feature}` (build-db's rows). The lowest code point wins when several map to one glyph."""
    out: dict[int, str] = {}
    for cp, gid in sorted(shaper.cmap().items()):
        if not is_listed(cp) or gid == 0:
            continue
        out.setdefault(gid, make_label(cp, "isol"))
        forms = forms_for(cp)
        for form in forms if len(forms) > 1 else ():
            shaped = shaped_form_glyph(shaper, cp, form)
            if shaped is not None and shaped != gid:
                out.setdefault(shaped, make_label(cp, form))
        for feature, variant in shaper.figure_variants(cp):
            out.setdefault(variant, make_label(cp, feature))
    return {gid: label for gid, label in out.items() if shaper.glyph_outline(gid)}


def shaped_form_glyph(shaper: Shaper, cp: int, form: str) -> int | None:
    """The one glyph HarfBuzz shapes `cp` to in the form's ZWJ context; None when it is several or .notdef."""
    glyphs = shaper.form_glyphs(cp, form)
    return glyphs[0][0] if len(glyphs) == 1 else None


# ---------------------------------------------------------------------------------------------- glyphs.db


def db_font_files(db: Path) -> dict[str, str]:
    """fonts.file_hash -> file_name of a glyphs.db ('' where the column is absent)."""
    from glyph_train.corpus.db import open_readonly, table_columns

    conn = open_readonly(db)
    try:
        if "file_name" not in table_columns(conn, "fonts"):
            return {}
        return {str(h): str(name or "") for h, name in conn.execute("SELECT file_hash, file_name FROM fonts")}
    finally:
        conn.close()


def db_records(db: Path, glyphs, font_files: dict[str, str]) -> Iterator[GlyphRecord]:
    """GlyphRecords of selected DB rows (GlyphMeta), contours fetched in chunks on a read-only connection."""
    from glyph_train.corpus.db import iter_contours

    by_id = {g.glyph_id: g for g in glyphs}
    for gid, text in iter_contours(db, list(by_id)):
        g = by_id[gid]
        yield GlyphRecord("db", g.font, font_files.get(g.font, ""), 0, "", g.family, g.style, "", gid, g.label,
                          text or "", g.em)


def read_contours(record_source: str, font_file: str, face_index: int, instance: str, glyph_id: int,
                  db: Path | None = None) -> str | None:
    """An indexed glyph's contours again, for pictures: from its font file or its glyphs.db; None if gone."""
    try:
        if record_source == "db":
            if db is None or not Path(db).is_file():
                return None
            from glyph_train.corpus.db import iter_contours

            return next(iter(iter_contours(db, [glyph_id])))[1]
        coords = dict((k, float(v)) for k, v in (p.split("=") for p in instance.split(",") if p)) if instance else {}
        shaper = Shaper(sfnt_data(Path(font_file)), face_index, coords)
        return shaper.glyph_outline(glyph_id) or None
    except (OSError, GlyphTrainError, StopIteration, ValueError):
        return None
