"""`glyph-train search --index INDEX_DIR (--char C [--form F] [--font FAMILY] | --glyph FONTFILE:GLYPHNAME |
--image PNG) [-k 10] [--out sheet.png] [--json]`: the top-k look-alike glyphs across the indexed fonts.

The query vector: `--char` with `--font` is that font's glyph for the label `{code point}_{form}`; without
`--font` it is the normalised mean of every indexed glyph with that label (known labels first, predicted
ones when no glyph is known to be it). `--glyph` is a glyph of an indexed font (or, if the font is not
indexed, the glyph drawn from the file and embedded by the index's export), `--image` a picture of a glyph
embedded by that export. A result is one glyph; glyphs sharing one outline share its score. The query
glyph itself is left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from glyph_train.cache.raster import RenderParams, render
from glyph_train.corpus.font_rows import EmBox
from glyph_train.corpus.unicode_data import LABEL_FORMS
from glyph_train.errors import GlyphTrainError
from glyph_train.flags import positive_int
from glyph_train.inference.index import INDEX_FLAG, GlyphIndex, load_index
from glyph_train.model.export import CHECKPOINT_FLAG


def add_arguments(parser: argparse.ArgumentParser) -> None:
    INDEX_FLAG.add(parser, required=True)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--char", metavar="C", help="a character (or U+XXXX) to find look-alikes of")
    what.add_argument("--glyph", metavar="FONTFILE:GLYPHNAME", help="a glyph of a font file, by glyph name")
    what.add_argument("--image", type=Path, metavar="PNG", help="a picture of one glyph")
    parser.add_argument("--form", choices=LABEL_FORMS, default="isol",
                        help="positional form or figure variant of --char (default isol)")
    parser.add_argument("--font", metavar="FAMILY", help="with --char: the glyph of this family ('Family' or 'Family Style')")
    parser.add_argument("-k", type=positive_int, default=10, help="number of results (default 10)")
    parser.add_argument("--out", type=Path, help="write a contact sheet PNG of the query and its results")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    CHECKPOINT_FLAG.variant(default_text="the index's own, to embed --image and --glyph").add(parser)


def run(args: argparse.Namespace) -> int:
    gi = load_index(args.index)
    if args.font and not args.char:
        raise GlyphTrainError("--font goes with --char")
    if args.char:
        query = char_query(gi, args.char, args.form, args.font)
    elif args.glyph:
        query = glyph_query(gi, args.glyph, args.checkpoint)
    else:
        query = image_query(gi, args.image, args.checkpoint)
    results = search(gi, query["vector"], args.k, exclude_row=query.get("row"))
    if args.out:
        write_sheet(gi, query, results, args.out)
    if args.json:
        shown = [{k: v for k, v in r.items() if k != "row"} for r in results]
        print(json.dumps({"query": query["describe"], "results": shown}, ensure_ascii=False, indent=1))
    else:
        print(f"query: {query['describe']}")
        for r in results:
            label = r["label"] or f"({r['predicted_label']} {r['confidence']:.2f})"
            print(f"{r['rank']:>3}  {r['score']:.4f}  {label:<12} {r['family']} {r['style']}  {r['glyph']}  ({r['font']})")
    if args.out:
        print(f"wrote {args.out}", file=sys.stderr if args.json else sys.stdout)
    return 0


# ---------------------------------------------------------------------------------------------- queries


def parse_char(text: str) -> int:
    t = text.strip()
    if len(t) == 1:
        return ord(t)
    if t.upper().startswith("U+"):
        try:
            return int(t[2:], 16)
        except ValueError:
            pass
    raise GlyphTrainError(f"--char {text!r}: give one character or U+XXXX")


def char_query(gi: GlyphIndex, char: str, form: str, family: str | None) -> dict:
    cp = parse_char(char)
    label = f"{cp}_{form}"
    known = gi.column("label") == label
    mask = known if known.any() else (gi.column("predicted_label") == label)
    if not mask.any():
        raise GlyphTrainError(f"{gi.info.get('path', 'the index')}: no glyph labelled or predicted {label} "
                              f"(U+{cp:04X} {form})")
    describe = {"kind": "char", "char": chr(cp), "label": label, "form": form,
                "matched_by": "label" if known.any() else "predicted_label"}
    if family:
        fam = np.char.lower(gi.column("family").astype(str))
        full = np.char.lower(np.char.add(np.char.add(gi.column("family").astype(str), " "), gi.column("style").astype(str)))
        in_family = mask & ((fam == family.lower()) | (full == family.lower()))
        if not in_family.any():
            families = sorted(set(gi.column("family")[mask].tolist()))
            raise GlyphTrainError(f"no {label} glyph in family {family!r}; families with one: {', '.join(families[:10])}"
                                  + (", ..." if len(families) > 10 else ""))
        rows = np.nonzero(in_family)[0]
        styles = gi.column("style")[rows]
        row = int(rows[np.argmax(styles == "Regular")]) if (styles == "Regular").any() else int(rows[0])
        meta = gi.table.slice(row, 1).to_pylist()[0]
        describe |= {"family": meta["family"], "style": meta["style"], "font": meta["font_file"], "glyph": _glyph(meta)}
        return {"vector": gi.vectors([meta["vector"]])[0], "row": row, "describe": describe, "meta": meta}
    vectors = gi.vectors(np.unique(gi.column("vector")[mask])[:10_000])
    mean = vectors.mean(axis=0)
    describe["glyphs_averaged"] = int(mask.sum())
    return {"vector": mean / max(float(np.linalg.norm(mean)), 1e-12), "describe": describe}


def glyph_query(gi: GlyphIndex, spec: str, checkpoint: str | None) -> dict:
    font_file, sep, name = spec.rpartition(":")
    if not sep or not font_file or not name:
        raise GlyphTrainError(f"--glyph {spec!r}: expected FONTFILE:GLYPHNAME")
    files = gi.column("font_file").astype(str)
    wanted = Path(font_file)
    same_file = np.array([f == str(wanted) or Path(f).name == wanted.name for f in files]) if len(files) else np.zeros(0, bool)
    hits = np.nonzero(same_file & (gi.column("glyph") == name))[0]
    describe = {"kind": "glyph", "font": font_file, "glyph": name}
    if len(hits):
        row = int(hits[0])
        meta = gi.table.slice(row, 1).to_pylist()[0]
        describe |= {"family": meta["family"], "style": meta["style"], "label": meta["label"] or meta["predicted_label"]}
        return {"vector": gi.vectors([meta["vector"]])[0], "row": row, "describe": describe, "meta": meta}
    if not wanted.is_file():
        raise GlyphTrainError(f"--glyph {spec!r}: {font_file} is neither indexed nor a font file here")
    from glyph_train.inference.sources import default_face, face_glyphs

    face = default_face(wanted)
    records = [r for r in face_glyphs(face, with_labels=False)[0] if r.glyph == name]
    if not records:
        raise GlyphTrainError(f"--glyph {spec!r}: {font_file} has no glyph named {name!r} that draws something")
    predictor = _predictor(gi, checkpoint)
    done = predictor.render([(0, records[0].contours, records[0].em)])
    if not done.keys:
        raise GlyphTrainError(f"--glyph {spec!r}: cannot render it ({done.report.first_error})")
    describe |= {"family": face.family_name, "style": face.style_name}
    return {"vector": predictor.predict(done.images).embeddings[0], "describe": describe, "image": done.images[0]}


def image_query(gi: GlyphIndex, png: Path, checkpoint: str | None) -> dict:
    predictor = _predictor(gi, checkpoint)
    if predictor.params.channels > 1:
        raise GlyphTrainError(f"--image {png}: the index's model reads {predictor.params.fit} images, whose em channel "
                              "needs the font's metrics, and a picture has none; query with --char or --glyph instead")
    image = load_glyph_image(png, predictor.params.img_size)
    return {"vector": predictor.predict(image[None]).embeddings[0], "describe": {"kind": "image", "image": str(png)},
            "image": image}


def load_glyph_image(path: Path, size: int) -> np.ndarray:
    """A picture of one glyph as the model sees one: grey, ink bright on dark, the ink's box centred and
    scaled into the frame with the renderer's margin."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()
    except (OSError, UnidentifiedImageError) as err:
        raise GlyphTrainError(f"{path}: not a readable image ({err})") from None
    if img.mode in ("RGBA", "LA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, "white")
        img = Image.alpha_composite(background, rgba)
    grey = np.asarray(img.convert("L"), dtype=np.float32)
    if np.median(grey) > 127:  # dark ink on light paper: invert to the renderer's convention
        grey = 255.0 - grey
    ink = grey > 0.25 * grey.max() if grey.max() > 0 else None
    if ink is None or not ink.any():
        raise GlyphTrainError(f"{path}: the image has no ink")
    ys, xs = np.nonzero(ink)
    crop = grey[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    margin = RenderParams().margin
    inner = max(1, round(size * (1 - 2 * margin)))
    h, w = crop.shape
    scale = inner / max(h, w)
    tile = Image.fromarray(crop.astype(np.uint8)).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                         Image.LANCZOS)
    canvas = Image.new("L", (size, size), 0)
    canvas.paste(tile, ((size - tile.width) // 2, (size - tile.height) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def _predictor(gi: GlyphIndex, checkpoint: str | None):
    from glyph_train.inference.predictor import Predictor

    export = checkpoint or gi.info.get("export")
    predictor = Predictor(export, bf16=gi.info.get("bf16", False))  # queries embedded as the index was
    if checkpoint is None and predictor.fingerprint != gi.info.get("export_fingerprint"):
        raise GlyphTrainError(f"{export}: changed since the index was built; pass --checkpoint with the export it was "
                              "built with, or re-embed")
    return predictor


# ---------------------------------------------------------------------------------------------- search


def search(gi: GlyphIndex, vector: np.ndarray, k: int, exclude_row: int | None = None) -> list[dict]:
    """Top-k glyph rows by similarity of their outline's vector; rows sharing a vector share its score."""
    vectors = gi.column("vector")
    order = np.argsort(vectors, kind="stable")
    sorted_vectors = vectors[order]
    results: list[dict] = []
    want = k + 1
    while True:
        scores, ids = gi.search(vector[None], want)
        results = []
        for score, vid in zip(scores[0], ids[0]):
            if vid < 0:
                continue
            lo, hi = np.searchsorted(sorted_vectors, [vid, vid + 1])
            for row in order[lo:hi]:
                if exclude_row is not None and row == exclude_row:
                    continue
                results.append((float(score), int(row)))
        if len(results) >= k or want >= gi.index.ntotal:
            break
        want = min(gi.index.ntotal, want * 4)
    out = []
    for rank, (score, row) in enumerate(results[:k], 1):
        meta = gi.table.slice(row, 1).to_pylist()[0]
        out.append({"rank": rank, "score": round(score, 6), "family": meta["family"], "style": meta["style"],
                    "font": meta["font_file"] or meta["font"], "glyph": _glyph(meta),
                    "label": meta["label"] or None, "predicted_label": meta["predicted_label"],
                    "confidence": round(float(meta["confidence"]), 6), "row": row})
    return out


def _glyph(meta: dict) -> str:
    return meta["glyph"] or str(meta["glyph_id"])


# ---------------------------------------------------------------------------------------------- sheet


def row_image(gi: GlyphIndex, meta: dict) -> np.ndarray | None:
    """An indexed glyph rendered again from its font file or glyphs.db as the index's model saw it."""
    from glyph_train.inference.sources import read_contours

    contours = read_contours(meta["source"], meta["font_file"], meta["face_index"], meta["instance"],
                             meta["glyph_id"], Path(meta["db"]) if meta["db"] else None)
    if not contours:
        return None
    params = RenderParams(img_size=int(gi.info["img_size"]), fit=gi.info["fit"])
    try:
        return render(contours, params, EmBox(meta["upem"], meta["ascent"], meta["descent"]))
    except ValueError:
        return None


def write_sheet(gi: GlyphIndex, query: dict, results: list[dict], out: Path) -> None:
    from glyph_train.cache.show import contact_sheet

    size = int(gi.info["img_size"])
    blank = np.zeros((size, size), np.uint8)
    first = query.get("image")
    if first is None and "meta" in query:
        first = row_image(gi, query["meta"])
    d = query["describe"]
    images = [first if first is not None else blank]
    captions = ["query " + (d.get("label") or d.get("kind", "")) + "\n" + str(d.get("family", d.get("image", "")))]
    for r in results:
        img = row_image(gi, gi.table.slice(r["row"], 1).to_pylist()[0])
        images.append(img if img is not None else blank)
        captions.append(f"{r['rank']}. {r['score']:.3f} {r['label'] or '~' + r['predicted_label']}\n{r['family']}\n"
                        f"{r['style']} {r['glyph']}")
    borders = ["blue"] + [None] * len(results)
    sheet = contact_sheet(images, captions, cols=min(len(images), 6), borders=borders)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
