"""Font discovery and the faces inside font files: TTC members, named instances of variable fonts,
their content hashes, names and vertical metrics.

A `FontFace` is one row of the `fonts` table. fontTools reads names, metrics and `fvar`; HarfBuzz
supplies the MVAR deltas and x/cap-height fallbacks so metrics match the instance's outlines.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from dataclasses import dataclass
from importlib.metadata import entry_points
from importlib.resources import files
from pathlib import Path
from typing import Iterable

import uharfbuzz as hb
from fontTools.ttLib import TTFont

from glyph_train.errors import GlyphTrainError

FONT_SUFFIXES = frozenset({".ttf", ".otf", ".ttc", ".otc", ".woff", ".woff2"})
FONTPKG_GROUP = "fontpkg.family"


class FontError(Exception):
    """A font file that cannot be used; build-db skips it with this one-line reason."""


@dataclass(frozen=True)
class FontFace:
    """One usable face: a whole static font, one member of a collection, or one named instance."""

    path: Path
    face_index: int
    coords: tuple[tuple[str, float], ...]  # (axis tag, design value) of a named instance; () if static
    file_hash: str
    family_name: str
    style_name: str
    upem: int
    ascent: int
    descent: int
    line_gap: int
    typo_ascent: int | None
    typo_descent: int | None
    x_height: int | None
    cap_height: int | None

    @property
    def instance(self) -> str | None:
        """Instance location as text, e.g. 'wght=700,wdth=100'; None for a static face."""
        return ",".join(f"{tag}={value:g}" for tag, value in self.coords) or None

    @property
    def display_name(self) -> str:
        """How messages name this face: the file, plus the member index and instance where needed."""
        name = str(self.path) + (f"#{self.face_index}" if self.face_index else "")
        return f"{name} ({self.instance})" if self.instance else name


def find_font_files(inputs: Iterable[str | Path], fontpkg: bool = False) -> list[Path]:
    """Font files named on the command line: files as given, directories searched recursively."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in FONT_SUFFIXES and p.is_file())
        elif path.is_file():
            found.append(path)  # named explicitly: try it whatever its suffix
        else:
            raise GlyphTrainError(f"{path}: no such file or directory; pass font files, directories or --fontpkg")
    if fontpkg:
        found += fontpkg_font_files()
    unique = list({p.resolve(): p for p in reversed(found)}.values())[::-1]  # first mention wins
    if not unique and not inputs:
        raise GlyphTrainError("no fonts given: pass font files, directories or --fontpkg")
    if not unique:
        raise GlyphTrainError(f"no font files ({', '.join(sorted(FONT_SUFFIXES))}) found in "
                              f"{', '.join(str(i) for i in inputs)}; pass font files, directories or --fontpkg")
    return unique


def fontpkg_font_files() -> list[Path]:
    """Every font of every installed fontpkg-* distribution, found through its entry point and
    metadata.json (not through the `fontpkg` package, which is not a dependency)."""
    paths: list[Path] = []
    for ep in sorted(entry_points(group=FONTPKG_GROUP), key=lambda e: e.name):
        root = files(ep.module)
        metadata = root / "metadata.json"
        if metadata.is_file():
            names = [entry["path"] for entry in json.loads(metadata.read_text(encoding="utf-8"))["files"]]
            paths += [Path(str(root / name)) for name in names]
        else:  # a package without metadata: take the font files it ships
            paths += sorted(p for p in Path(str(root)).rglob("*") if p.suffix.lower() in FONT_SUFFIXES)
    if not paths:
        raise GlyphTrainError("--fontpkg: no fontpkg-* fonts are installed; run pip install 'glyph-train[fonts]'")
    return paths


def sfnt_data(path: Path) -> bytes:
    """The file's bytes as HarfBuzz can read them: WOFF/WOFF2 are decompressed to plain sfnt."""
    data = path.read_bytes()
    if data[:4] in (b"wOFF", b"wOF2"):
        font = TTFont(io.BytesIO(data))
        font.flavor = None
        out = io.BytesIO()
        font.save(out, reorderTables=False)
        return out.getvalue()
    return data


def list_faces(path: Path, require_cmap: bool = True) -> list[FontFace]:
    """All faces of a font file; raises FontError naming what is wrong with an unusable file.
    require_cmap=False accepts fonts without a Unicode cmap (inference labels exactly those)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise FontError(f"cannot read: {err.strerror or err}") from None
    digest = hashlib.sha256(data).hexdigest()
    collection = data[:4] == b"ttcf"
    count = struct.unpack(">I", data[8:12])[0] if collection and len(data) >= 12 else 1
    faces: list[FontFace] = []
    for index in range(count):
        try:
            font = TTFont(io.BytesIO(data), fontNumber=index if collection else -1, lazy=True)
            faces += _faces_of(font, path, index, digest, data, require_cmap)
        except FontError:
            raise
        except Exception as err:  # fontTools raises many types on corrupt data; the reason is what matters
            raise FontError(f"not a readable font ({type(err).__name__}: {error_line(err)})") from None
    return faces


def _faces_of(font: TTFont, path: Path, index: int, digest: str, data: bytes,
              require_cmap: bool = True) -> list[FontFace]:
    if not any(tag in font for tag in ("glyf", "CFF ", "CFF2")):
        raise FontError("no outlines (no glyf, CFF or CFF2 table)")
    if require_cmap and not font.getBestCmap():
        raise FontError("no Unicode cmap")
    name = font["name"]
    family = name.getDebugName(16) or name.getDebugName(1) or path.stem
    static_style = name.getDebugName(17) or name.getDebugName(2) or "Regular"
    if "fvar" in font and font["fvar"].instances:
        instances = [(tuple(inst.coordinates.items()), name.getDebugName(inst.subfamilyNameID))
                     for inst in font["fvar"].instances]
    else:
        instances = [((), static_style)]
    hb_font = hb.Font(hb.Face(sfnt_data(path) if data[:4] in (b"wOFF", b"wOF2") else data, index))
    faces = []
    for coords, style in instances:
        hb_font.set_variations(dict(coords))
        key = f"{digest}/{index}/" + ",".join(f"{t}={v:g}" for t, v in coords)
        # A plain static font keeps the plain file hash; members and instances hash file + location.
        file_hash = digest if index == 0 and not coords else hashlib.sha256(key.encode()).hexdigest()
        faces.append(FontFace(path=path, face_index=index, coords=coords, file_hash=file_hash,
                              family_name=family, style_name=style or static_style,
                              upem=font["head"].unitsPerEm, **_metrics(font, hb_font)))
    return faces


def _metrics(font: TTFont, hb_font: hb.Font) -> dict[str, int | None]:
    """hhea metrics as stored (MVAR has no tags for them); OS/2 typo metrics plus the instance's MVAR
    deltas; x/cap height from HarfBuzz, which varies them and measures 'x'/'H' when OS/2 lacks them."""
    tags = hb.OTMetricsTag
    hhea = font["hhea"]
    os2 = font["OS/2"] if "OS/2" in font else None

    def typo(value: int, tag: hb.OTMetricsTag) -> int:
        return round(value + hb_font.get_metric_y_variation(tag))

    def measured(tag: hb.OTMetricsTag) -> int | None:
        value = hb_font.get_metric_position_with_fallback(tag)
        return round(value) if value else None

    return dict(
        ascent=hhea.ascent, descent=hhea.descent, line_gap=hhea.lineGap,
        typo_ascent=typo(os2.sTypoAscender, tags.HORIZONTAL_ASCENDER) if os2 else None,
        typo_descent=typo(os2.sTypoDescender, tags.HORIZONTAL_DESCENDER) if os2 else None,
        x_height=measured(tags.X_HEIGHT), cap_height=measured(tags.CAP_HEIGHT),
    )


def error_line(err: BaseException) -> str:
    """An exception as one line for a skip message."""
    text = str(err).strip()
    return text.splitlines()[0] if text else "no details"
