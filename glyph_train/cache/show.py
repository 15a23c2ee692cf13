"""`glyph-train show`: a contact sheet PNG of rendered glyphs, to check what the model will see.

Cells show the exact pixels the cache would hold (ink white on black, same size and fit), captioned
with the label, the character it names and the font family/style. `contact_sheet` is reusable, e.g. for
retrieval queries and their neighbours.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import unicodedata
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from glyph_train.cache.pipeline import render_rows
from glyph_train.cache.raster import RENDER_FLAGS, RenderParams
from glyph_train.corpus.db import DB_FLAG, FILTER_FLAGS, GlyphMeta, filter_from_args, iter_contours, select_glyphs
from glyph_train.errors import GlyphTrainError
from glyph_train.flags import positive_int
from glyph_train.outputs import check_output_file, check_outputs, existing_file

CAPTION_SIZE = 11
LINE_HEIGHT = 13
# Fonts tried, in order, to draw the character itself in a caption (PIL's default covers Latin only).
_CHAR_FONTS = (("fontpkg_noto_sans", "NotoSans[wdth,wght].ttf"),
               ("fontpkg_noto_sans_arabic", "NotoSansArabic[wdth,wght].ttf"),
               ("fontpkg_amiri", "Amiri-Regular.ttf"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    DB_FLAG.add(parser, required=True)
    what = parser.add_mutually_exclusive_group(required=True)
    FILTER_FLAGS["labels"].add(what)
    what.add_argument("--fonts", metavar="LIST",
                      help="glyphs of these fonts: comma list of family names, 'Family Style' or font hashes")
    what.add_argument("--random", type=int, metavar="N", help="N glyphs sampled by --seed")
    parser.add_argument("--out", required=True, type=Path, help="image file to write (.png; any format PIL writes)")
    for flag in (*RENDER_FLAGS.values(), *(FILTER_FLAGS[k] for k in ("char_classes", "exclude_shaped", "seed"))):
        flag.add(parser)
    parser.add_argument("--max", type=positive_int, default=200, dest="max_glyphs", help="at most this many cells (default 200)")
    parser.add_argument("--cols", type=positive_int, default=None, help="cells per row (default: about square)")


def run(args: argparse.Namespace) -> int:
    params = RenderParams.from_args(args)
    check_outputs({"--out": args.out}, {"--db": args.db, "--labels": existing_file(args.labels)})
    if args.random is not None and args.random < 1:
        raise GlyphTrainError(f"--random must be at least 1, got {args.random}")
    image_format = writable_image_format(args.out)
    check_output_file(args.out, "--out")
    flt = replace(filter_from_args(args), limit=args.random)
    sel = select_glyphs(args.db, flt)
    glyphs = sel.glyphs
    if args.fonts:
        glyphs = _match_fonts(glyphs, [s.strip() for s in args.fonts.split(",") if s.strip()], args.db)
        glyphs.sort(key=lambda g: (g.family, g.style, g.font, _label_order(g.label)))
    elif flt.labels:
        rank = {lab: k for k, lab in enumerate(flt.labels)}
        glyphs = sorted(glyphs, key=lambda g: (rank[g.label], g.family, g.style, g.glyph_id))
    if not glyphs:
        raise GlyphTrainError(f"{args.db}: nothing to show ({sel.stats.summary()})")
    total = len(glyphs)
    glyphs = glyphs[: args.max_glyphs]

    by_id = {g.glyph_id: g for g in glyphs}
    done = render_rows(((gid, text, by_id[gid].em) for gid, text in iter_contours(args.db, list(by_id))), params,
                       skip_blank=False, key_name="glyph_id")
    done.report.check(args.db, len(glyphs))
    if not done.keys:
        raise GlyphTrainError(f"{args.db}: none of the {len(glyphs)} selected glyphs could be rendered "
                              f"(first: {done.report.first_error})")
    images = list(done.images)
    sheet = contact_sheet(images, [glyph_caption(by_id[gid]) for gid in done.keys], cols=args.cols or None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp-{os.getpid()}")  # a failed write keeps an earlier sheet
    try:
        sheet.save(tmp, format=image_format)
        os.replace(tmp, args.out)
    except (OSError, ValueError) as err:
        if getattr(err, "errno", None) is not None:
            raise  # disk full, read-only...: cli.main names the path
        raise GlyphTrainError(f"{args.out}: PIL cannot write this sheet as {image_format} ({err}); "
                              "end --out with .png") from None
    finally:
        tmp.unlink(missing_ok=True)
    note = f" (first {len(glyphs)} of {total})" if total > len(glyphs) else ""
    skipped = f"; {done.report.summary()}" if done.report.failed else ""
    print(f"show: wrote {args.out}: {len(images)} glyphs{note}{skipped}")
    return 0


def writable_image_format(path: Path) -> str:
    """The PIL format that `path`'s extension names, checked before anything is rendered."""
    Image.init()  # registers every plugin's extensions
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        what = f"'{path.suffix}' is not an image extension PIL can write" if path.suffix else "no file extension"
        raise GlyphTrainError(f"{path}: {what}; end --out with .png (or .jpg, .webp, .tif)")
    return fmt


def _match_fonts(glyphs: list[GlyphMeta], names: list[str], db: Path) -> list[GlyphMeta]:
    wanted = [n.casefold() for n in names]

    def hit(g: GlyphMeta) -> bool:
        keys = (g.family.casefold(), f"{g.family} {g.style}".casefold())
        return any(w in keys or (len(w) >= 8 and g.font.startswith(w)) for w in wanted)

    out = [g for g in glyphs if hit(g)]
    if not out:
        families = sorted({g.family for g in glyphs})
        more = ", ..." if len(families) > 8 else ""
        raise GlyphTrainError(f"{db}: no font matches {', '.join(names)}; families: {', '.join(families[:8])}{more}")
    return out


def _label_order(label: str) -> tuple:
    m = re.match(r"(\d+)_", label)
    return (int(m.group(1)) if m else 1 << 30, label)


def label_char(label: str) -> str | None:
    """The printable character a `{code point}_{form}` label names, else None (labels are opaque)."""
    m = re.match(r"(\d+)(_|$)", label)
    if not m or int(m.group(1)) > 0x10FFFF:
        return None
    ch = chr(int(m.group(1)))
    return None if unicodedata.category(ch)[0] in "CZ" else ch


def glyph_caption(g: GlyphMeta) -> str:
    ch = label_char(g.label)
    first = f"{g.label}  {ch}  U+{ord(ch):04X}" if ch else g.label
    return f"{first}\n{g.family}\n{g.style}" if g.style else f"{first}\n{g.family}"


@lru_cache(maxsize=None)
def _default_font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


@lru_cache(maxsize=None)
def _char_fonts(size: int) -> tuple:
    from fontTools.ttLib import TTFont

    out = []
    for pkg, name in _CHAR_FONTS:
        try:
            path = Path(importlib.import_module(pkg).__file__).parent / "files" / name
            cmap = set(TTFont(path, lazy=True).getBestCmap())
            out.append((cmap, ImageFont.truetype(str(path), size)))
        except (ImportError, OSError, TypeError):
            continue
    return tuple(out)


def _font_for(text: str, size: int):
    """PIL's default font for ASCII, else the first caption font that has every character of `text`."""
    need = {ord(c) for c in text if not c.isspace()}
    if any(cp > 0x7F for cp in need):
        for cmap, font in _char_fonts(size):
            if need <= cmap:
                return font
    return _default_font(size)


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _side_by_side(image: np.ndarray, gap: int = 2) -> np.ndarray:
    """(S, S) as it is; (C, S, S) as its channels left to right with a grey gap between them."""
    if image.ndim == 2:
        return image
    rule = np.full((image.shape[1], gap), 128, np.uint8)
    return np.hstack([part for c in image for part in (c, rule)][:-1])


def contact_sheet(images: Sequence[np.ndarray | Image.Image], captions: Sequence[str] | None = None,
                  cols: int | None = None, borders: Sequence[str | None] | None = None,
                  cell_width: int | None = None) -> Image.Image:
    """Grid of images (uint8 arrays or PIL images, shown as they are; a (C, S, S) array shows its channels
    side by side) with multi-line captions below each.

    borders: optional colour per cell (e.g. "green"/"red" for retrieval hits/misses). Returns an RGB image.
    """
    if not len(images):
        raise ValueError("contact_sheet needs at least one image")
    tiles = [im if isinstance(im, Image.Image) else Image.fromarray(_side_by_side(np.asarray(im, dtype=np.uint8)))
             for im in images]
    captions = list(captions) if captions is not None else [""] * len(tiles)
    if len(captions) != len(tiles):
        raise ValueError(f"{len(tiles)} images but {len(captions)} captions")
    cols = cols or max(1, int(np.ceil(np.sqrt(len(tiles)))))
    img_w = max(t.width for t in tiles)
    img_h = max(t.height for t in tiles)
    cell_w = max(img_w, cell_width or 128)
    lines = max((c.count("\n") + 1 for c in captions if c), default=0)
    pad = 4
    cell_h = img_h + lines * LINE_HEIGHT + (pad if lines else 0)
    rows = -(-len(tiles) // cols)
    sheet = Image.new("RGB", (cols * (cell_w + pad) + pad, rows * (cell_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (tile, cap) in enumerate(zip(tiles, captions)):
        x = pad + (k % cols) * (cell_w + pad)
        y = pad + (k // cols) * (cell_h + pad)
        ix = x + (cell_w - tile.width) // 2
        sheet.paste(tile.convert("RGB"), (ix, y))
        if borders is not None and borders[k]:
            draw.rectangle((ix - 2, y - 2, ix + tile.width + 1, y + tile.height + 1), outline=borders[k], width=2)
        for j, line in enumerate(cap.split("\n") if cap else []):
            font = _font_for(line, CAPTION_SIZE)
            draw.text((x, y + img_h + 2 + j * LINE_HEIGHT), _fit_text(draw, line, font, cell_w), fill="black",
                      font=font)
    return sheet
