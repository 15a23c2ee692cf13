"""Uploaded fonts under review: each upload gets a random id and its own folder inside the server's
temporary upload folder; a background thread labels it (label_font in an isolated process: fontTools and
HarfBuzz never read an uploaded font inside the server), then the reviewer accepts, changes or marks
unknown each glyph's label. Downloads: the decisions as label-font's CSV and a repaired font (repair.py),
both written by glyph_train.inference's own writers."""

from __future__ import annotations

import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from glyph_train.corpus.font_rows import EmBox
from glyph_train.corpus.unicode_data import LABEL_FORMS, forms_for
from glyph_train.errors import GlyphTrainError
from glyph_train.inference.label_font import UNKNOWN, FontLabels, GlyphLabel, write_csv
from glyph_train.serve.catalog import LABEL, describe_label
from glyph_train.serve.images import PngCache, glyph_png
from glyph_train.serve.isolated import run_isolated

FONT_MAGIC = {b"\x00\x01\x00\x00": ".ttf", b"true": ".ttf", b"OTTO": ".otf", b"ttcf": ".ttc", b"wOFF": ".woff",
              b"wOF2": ".woff2"}
UPLOAD_ID = re.compile(r"^[0-9a-f]{16}$")
MAX_UPLOADS = 32  # the oldest finished upload is removed beyond this
ACTIONS = ("accept", "change", "unknown", "reset")


class UploadNotFound(LookupError):
    """An upload id the server does not hold (never held, removed, or from before a restart)."""


@dataclass
class Upload:
    id: str
    name: str  # the file name the browser sent, for display and download names only
    folder: Path
    font: Path
    created: float = field(default_factory=time.time)
    status: str = "queued"  # queued | working | ready | failed
    message: str = ""
    labels: FontLabels | None = None
    outlines: dict[int, str] = field(default_factory=dict)
    em: EmBox | None = None
    decisions: dict[int, tuple[str, str]] = field(default_factory=dict)  # glyph id -> (action, label)
    seconds: float = 0.0

    @property
    def glyphs(self) -> list[GlyphLabel]:
        return self.labels.glyphs if self.labels else []

    def glyph(self, glyph_id: int) -> GlyphLabel:
        for g in self.glyphs:
            if g.glyph_id == glyph_id:
                return g
        raise GlyphTrainError(f"{self.name} has no glyph {glyph_id}")

    def final_label(self, g: GlyphLabel) -> str:
        return self.decisions[g.glyph_id][1] if g.glyph_id in self.decisions else g.label


def suggested(g: GlyphLabel) -> str:
    """What 'accept' keeps: the joint assignment's label, or the glyph's own best guess where the assignment
    left it unknown (the reviewer is the judge then)."""
    return g.label if g.label != UNKNOWN else (g.argmax or UNKNOWN)


def label_uploaded_font(font: str, export: str, min_confidence: float) -> tuple[FontLabels, dict[int, str], EmBox]:
    """Runs in the isolated process: label_font's result plus each glyph's outline for the pictures."""
    from glyph_train.inference.sources import default_face, face_em, face_glyphs

    path = Path(font)
    face = default_face(path)  # a file that is no font fails here, before torch and the model load
    from glyph_train.inference.label_font import label_font
    from glyph_train.inference.predictor import Predictor

    result = label_font(path, Predictor(export), min_confidence)
    records, _ = face_glyphs(face, with_labels=False)
    return result, {r.glyph_id: r.contours for r in records}, face_em(face)


def repair_uploaded_font(font: str, out: str, assignment: dict[str, str]) -> str:
    """Runs in the isolated process: repair.write_repaired_font, its report as one line."""
    from glyph_train.inference.repair import write_repaired_font

    report = write_repaired_font(Path(font), Path(out), assignment)
    return report.summary() + "".join(f"; stand-in: {line}" for line in report.stand_ins[:20]) \
        + "".join(f"; not mapped: {line}" for line in report.unmapped[:20])


class Reviews:
    def __init__(self, root: Path, export: Path, label_names: list[str], fit: str, min_confidence: float,
                 timeout: float, images: PngCache) -> None:
        self.root = Path(root)
        self.export = Path(export)
        self.label_names = label_names
        self.known_labels = set(label_names)
        self.fit = fit
        self.min_confidence = min_confidence
        self.timeout = timeout
        self.images = images
        self._uploads: dict[str, Upload] = {}
        self._lock = threading.Lock()
        self._label_text = [(name, describe_label(name)) for name in label_names]

    # ------------------------------------------------------------------------------------------ uploads

    def add(self, filename: str, data: bytes) -> Upload:
        name = _display_name(filename)
        suffix = FONT_MAGIC.get(data[:4])
        if suffix is None:
            raise GlyphTrainError(f"{name}: not a font file (expected TrueType, OpenType, a collection, WOFF or WOFF2)")
        upload_id = secrets.token_hex(8)
        folder = self.root / upload_id
        folder.mkdir(mode=0o700)
        font = folder / f"font{suffix}"
        font.write_bytes(data)
        upload = Upload(upload_id, name, folder, font)
        with self._lock:
            self._uploads[upload_id] = upload
            self._evict()
        threading.Thread(target=self._label, args=(upload,), daemon=True, name=f"label-{upload_id}").start()
        return upload

    def _label(self, upload: Upload) -> None:
        start = time.perf_counter()

        def started() -> None:
            nonlocal start
            upload.status, start = "working", time.perf_counter()

        try:
            labels, outlines, em = run_isolated(label_uploaded_font, (str(upload.font), str(self.export),
                                                self.min_confidence), self.timeout, upload.name, started)
            upload.labels, upload.outlines, upload.em = labels, outlines, em
            upload.status = "ready"
        except GlyphTrainError as err:
            upload.message = str(err).replace(str(upload.font), upload.name)
            upload.status = "failed"
        except Exception as err:  # never let a labelling thread die silently
            upload.message = f"{upload.name}: {type(err).__name__}: {err}"
            upload.status = "failed"
        upload.seconds = time.perf_counter() - start

    def _evict(self) -> None:
        done = sorted((u for u in self._uploads.values() if u.status in ("ready", "failed")), key=lambda u: u.created)
        while len(self._uploads) > MAX_UPLOADS and done:
            self._remove(done.pop(0))

    def _remove(self, upload: Upload) -> None:
        self._uploads.pop(upload.id, None)
        self.images.drop(upload.id)
        shutil.rmtree(upload.folder, ignore_errors=True)

    def remove(self, upload_id: str) -> None:
        upload = self.get(upload_id)
        with self._lock:
            self._remove(upload)

    def get(self, upload_id: str) -> Upload:
        upload = self._uploads.get(upload_id) if UPLOAD_ID.match(upload_id or "") else None
        if upload is None:
            raise UploadNotFound("no such uploaded font (the server keeps uploads only while it runs)")
        return upload

    def ready(self, upload_id: str) -> Upload:
        upload = self.get(upload_id)
        if upload.status != "ready":
            raise GlyphTrainError(f"{upload.name}: " + (upload.message if upload.status == "failed" else "still labelling"))
        return upload

    def all(self) -> list[Upload]:
        return sorted(self._uploads.values(), key=lambda u: -u.created)

    # ------------------------------------------------------------------------------------------ glyphs

    def page(self, upload: Upload, show: str = "all", query: str = "", page: int = 1,
             per_page: int = 100) -> tuple[list[dict], int, int]:
        """One page of the review table (rows, matching glyphs, page number clamped to the last page): least
        confident first, glyphs that draw nothing last. Only the page's rows are built."""
        q = query.strip().lower()
        picked = []
        for g in sorted(upload.glyphs, key=lambda g: (g.argmax == "", g.confidence, g.glyph_id)):
            decided = g.glyph_id in upload.decisions
            if (show == "open" and decided) or (show == "decided" and not decided):
                continue
            if q:
                final = upload.final_label(g)
                if q not in g.glyph.lower() and q not in final.lower() and q not in describe_label(final).lower():
                    continue
            picked.append(g)
        pages = max(1, -(-len(picked) // per_page))
        page = max(1, min(page, pages))
        holders = self._holders(upload)
        rows = [self.row(upload, g, holders) for g in picked[(page - 1) * per_page: page * per_page]]
        return rows, len(picked), page

    def _holders(self, upload: Upload) -> dict[str, list[str]]:
        """label -> the glyphs that currently have it."""
        out: dict[str, list[str]] = {}
        for g in upload.glyphs:
            out.setdefault(upload.final_label(g), []).append(g.glyph)
        return out

    def row(self, upload: Upload, g: GlyphLabel, holders: dict[str, list[str]] | None = None) -> dict:
        action, final = upload.decisions.get(g.glyph_id, ("", g.label))
        holders = self._holders(upload) if holders is None else holders
        conflicts = [] if final == UNKNOWN else [name for name in holders.get(final, []) if name != g.glyph]
        return {"glyph_id": g.glyph_id, "glyph": g.glyph, "label": g.label, "label_text": describe_label(g.label),
                "suggested": suggested(g), "confidence": round(g.confidence, 4), "argmax": g.argmax,
                "top5": [{"label": lab, "p": round(p, 4), "text": describe_label(lab)} for lab, p in g.top5],
                "decision": action, "final": final, "final_text": describe_label(final),
                "conflicts": conflicts}  # other glyphs with this label: a repaired font maps a label to one glyph

    def decide(self, upload: Upload, glyph_id: int, action: str, label: str | None = None) -> dict:
        g = upload.glyph(glyph_id)
        if action == "accept":
            upload.decisions[glyph_id] = ("accept", suggested(g))
        elif action == "unknown":
            upload.decisions[glyph_id] = ("unknown", UNKNOWN)
        elif action == "change":
            upload.decisions[glyph_id] = ("change", self.check_label(label or ""))
        elif action == "reset":
            upload.decisions.pop(glyph_id, None)
        else:
            raise GlyphTrainError(f"action {action!r}: choose one of {', '.join(ACTIONS)}")
        return self.row(upload, g)

    def check_label(self, label: str) -> str:
        label = label.strip()
        if label == UNKNOWN or label in self.known_labels:
            return label
        m = LABEL.match(label)
        if m and m.group(2) in LABEL_FORMS and int(m.group(1)) <= 0x10FFFF and not 0xD800 <= int(m.group(1)) <= 0xDFFF:
            return label  # a character the model was not trained on is still a valid label for the font
        forms = "|".join(LABEL_FORMS)
        raise GlyphTrainError(f"label {label!r}: not a label of this model nor {{code point}}_{{{forms}}}")

    def find_labels(self, text: str, limit: int = 30) -> list[dict]:
        """Labels for the picker: by label, character, U+XXXX or Unicode name."""
        t = text.strip()
        extra: list[str] = []
        cp = _code_point(t)
        if cp is not None:
            extra = [f"{cp}_{f}" for f in (forms_for(cp) or ("isol",))]
        tl = t.lower()
        hits = [name for name, desc in self._label_text if not tl or tl in name.lower() or tl in desc.lower()
                or (len(t) == 1 and desc.startswith(t + " "))]
        seen, out = set(), []
        for name in extra + hits + ([UNKNOWN] if tl and UNKNOWN.startswith(tl) else []):
            if name not in seen:
                seen.add(name)
                out.append({"label": name, "text": describe_label(name)})
        return out[:limit]

    # ------------------------------------------------------------------------------------------ outputs

    def image(self, upload: Upload, glyph_id: int) -> bytes:
        upload.glyph(glyph_id)
        return self.images.get((upload.id, glyph_id),
                               lambda: glyph_png(upload.outlines.get(glyph_id), self.fit, upload.em))

    def decided_glyphs(self, upload: Upload) -> list[GlyphLabel]:
        """label-font's rows with the reviewer's labels; confidence stays the model's probability of the label
        (0 when it is outside the glyph's top 5), top5 stays the model's."""
        out = []
        for g in upload.glyphs:
            final = upload.final_label(g)
            if final == g.label:
                out.append(g)
                continue
            probs = dict(g.top5)
            conf = probs.get(final, 0.0) if final != UNKNOWN else (g.top5[0][1] if g.top5 else 0.0)
            out.append(replace(g, label=final, confidence=conf))
        return out

    def write_csv(self, upload: Upload) -> Path:
        path = upload.folder / "labels.csv"
        write_csv(path, self.decided_glyphs(upload))
        return path

    def write_repaired(self, upload: Upload) -> tuple[Path, str]:
        out = upload.folder / f"repaired{upload.font.suffix}"
        assignment = {g.glyph: g.label for g in self.decided_glyphs(upload) if g.label != UNKNOWN}
        summary = run_isolated(repair_uploaded_font, (str(upload.font), str(out), assignment), self.timeout,
                               f"{upload.name}: repair")
        return out, summary

    def close(self) -> None:
        with self._lock:
            for upload in list(self._uploads.values()):
                self._remove(upload)


def _display_name(filename: str) -> str:
    """The browser's file name, reduced to a harmless display name (never used as a path)."""
    name = re.split(r"[\\/]", filename or "")[-1]
    name = re.sub(r"[^\w.\- ()+]", "_", name).strip(" .")[:100]
    return name or "font"


def _code_point(text: str) -> int | None:
    if len(text) == 1:
        return ord(text)
    if re.fullmatch(r"[Uu]\+[0-9A-Fa-f]{4,6}", text):
        cp = int(text[2:], 16)
        return cp if cp <= 0x10FFFF else None
    return None
