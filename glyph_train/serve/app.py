"""The Flask app. Pages: /search and /review; JSON under /api/; glyph PNGs under /img/. Requests carry ids
only (an index row, an upload id, a glyph id); a user error becomes a one-line message on the page (or
`{"error": ...}` from the API), and an unexpected one a short message too, its traceback only in the
server's log."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, Response, jsonify, redirect, render_template, request, send_file, url_for
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from glyph_train.corpus.unicode_data import LABEL_FORMS
from glyph_train.errors import GlyphTrainError
from glyph_train.serve.catalog import Catalog, describe_label, label_parts
from glyph_train.serve.images import PngCache
from glyph_train.serve.review import Reviews, UploadNotFound

log = logging.getLogger("glyph_train.serve")
PER_PAGE = (50, 100, 200, 500)
LABELS, CONFIG = "labels.json", "config.json"  # export.LABELS / export.CONFIG; importing export loads torch


@dataclass(frozen=True)
class ServeOptions:
    index: Path
    export: Path
    uploads: Path  # an empty folder the app owns (the command removes it on exit)
    min_confidence: float  # label-font's --min-confidence, defined there (importing it here would load torch)
    max_upload_mb: float = 50.0
    timeout: float = 300.0


def read_export_labels(export: Path) -> tuple[list[str], dict]:
    """labels.json and config.json of an export, without loading the model (the worker does that)."""
    try:
        labels = json.loads((export / LABELS).read_text(encoding="utf-8"))
        config = json.loads((export / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise GlyphTrainError(f"{export}: not a glyph-train export ({type(err).__name__}: {err}); give run_dir/export "
                              "or run_dir/best") from None
    if not isinstance(labels, list) or not isinstance(config, dict):
        raise GlyphTrainError(f"{export}: damaged export (labels.json must be a list, config.json an object)")
    return [str(x) for x in labels], config


def create_app(options: ServeOptions) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(options.max_upload_mb * 1024 * 1024) + 64 * 1024  # + form overhead
    images = PngCache()
    catalog = Catalog(options.index, images)
    label_names, config = read_export_labels(options.export)
    reviews = Reviews(options.uploads, options.export, label_names, str(config.get("fit", "tight")),
                      options.min_confidence, options.timeout, images)
    app.extensions["glyph_train"] = {"catalog": catalog, "reviews": reviews, "images": images}
    app.jinja_env.filters["label_parts"] = label_parts

    # ------------------------------------------------------------------------------------------ errors

    def wants_json() -> bool:
        return request.path.startswith("/api/")

    def message(text: str, status: int):
        if wants_json():
            return jsonify({"error": text}), status
        return render_template("error.html", message=text, status=status), status

    @app.errorhandler(GlyphTrainError)
    def user_error(err: GlyphTrainError):
        return message(str(err), 400)

    @app.errorhandler(UploadNotFound)
    def not_found(err: UploadNotFound):
        return message(str(err), 404)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(err):
        return message(f"the file is larger than the {options.max_upload_mb:g} MB upload limit "
                       "(glyph-train serve --max-upload-mb)", 413)

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        return message(f"{err.code} {err.name}: {err.description}", err.code or 500)

    @app.errorhandler(Exception)
    def unexpected(err: Exception):
        log.exception("unexpected error on %s", request.path)  # the traceback goes to the server log only
        return message(f"internal error ({type(err).__name__}); the server keeps running, see its log", 500)

    # ------------------------------------------------------------------------------------------ search

    def int_arg(name: str, default: int, low: int, high: int) -> int:
        text = request.args.get(name, "")
        if not text:
            return default
        if not text.lstrip("-").isdigit():
            raise GlyphTrainError(f"{name}={text!r}: expected a whole number")
        return max(low, min(high, int(text)))

    def run_search() -> tuple[dict | None, list[dict]]:
        k = int_arg("k", 12, 1, 100)
        if request.args.get("row", ""):
            return catalog.search_row(int_arg("row", 0, -1, 1 << 62), k)
        char = request.args.get("char", "").strip()
        if not char:
            return None, []
        return catalog.search_char(char, request.args.get("form", "isol"), request.args.get("family", "").strip(), k)

    @app.get("/")
    def home():
        return redirect(url_for("search_page"))

    @app.get("/search")
    def search_page():
        error, query, results = None, None, []
        try:
            query, results = run_search()
        except GlyphTrainError as err:
            error = str(err)
        for r in results:
            r["label_text"] = describe_label(r["label"] or r["predicted_label"])
        return render_template("search.html", query=query, results=results, error=error, forms=LABEL_FORMS,
                               groups=catalog.grid_groups(), args=request.args, size=len(catalog),
                               families=len(catalog.families))

    @app.get("/api/search")
    def search_api():
        query, results = run_search()
        if query is None:
            raise GlyphTrainError("give char=C (with form= and family=) or row=N")
        return jsonify({"query": query, "results": results})

    @app.get("/api/families")
    def families_api():
        return jsonify(catalog.families_matching(request.args.get("q", ""), limit=int_arg("limit", 20, 1, 100)))

    @app.get("/api/status")
    def status_api():
        return jsonify({"glyphs": len(catalog), "vectors": int(catalog.gi.index.ntotal), "families": len(catalog.families),
                        "factory": catalog.gi.info.get("factory"), "labels": len(label_names),
                        "uploads": len(reviews.all()), "image_cache": {"hits": images.hits, "misses": images.misses}})

    @app.get("/img/index/<int:row>.png")
    def index_image(row: int):
        return png(catalog.image(row))

    def png(data: bytes) -> Response:
        response = Response(data, mimetype="image/png")
        response.headers["Cache-Control"] = "private, max-age=3600"
        return response

    # ------------------------------------------------------------------------------------------ review

    @app.get("/review")
    def review_list():
        return render_template("review_list.html", uploads=reviews.all(), max_mb=options.max_upload_mb, error=None)

    @app.post("/review")
    def upload():
        file = request.files.get("font")
        if file is None or not file.filename:
            raise GlyphTrainError("choose a font file to upload")
        up = reviews.add(file.filename, file.read())
        return redirect(url_for("review_page", upload_id=up.id))

    @app.get("/review/<upload_id>")
    def review_page(upload_id: str):
        up = reviews.get(upload_id)
        if up.status != "ready":
            return render_template("review_wait.html", upload=up)
        show = request.args.get("show", "all")
        q = request.args.get("q", "")
        per_page = int_arg("per_page", 100, 1, max(PER_PAGE))
        rows, total, page = reviews.page(up, show, q, int_arg("page", 1, 1, 1 << 30), per_page)
        pages = max(1, -(-total // per_page))
        decided = len(up.decisions)
        return render_template("review.html", upload=up, rows=rows,
                               total=total, page=page, pages=pages, per_page=per_page, show=show, q=q,
                               decided=decided, glyph_count=len(up.glyphs), per_page_choices=PER_PAGE)

    @app.post("/review/<upload_id>/delete")
    def review_delete(upload_id: str):
        reviews.remove(upload_id)
        return redirect(url_for("review_list"))

    @app.get("/api/review/<upload_id>")
    def review_status_api(upload_id: str):
        up = reviews.get(upload_id)
        return jsonify({"id": up.id, "name": up.name, "status": up.status, "message": up.message,
                        "glyphs": len(up.glyphs), "decided": len(up.decisions), "seconds": round(up.seconds, 2)})

    @app.get("/api/review/<upload_id>/glyphs")
    def review_glyphs_api(upload_id: str):
        up = reviews.ready(upload_id)
        per_page = int_arg("per_page", 100, 1, 1000)
        rows, total, page = reviews.page(up, request.args.get("show", "all"), request.args.get("q", ""),
                                         int_arg("page", 1, 1, 1 << 30), per_page)
        return jsonify({"total": total, "page": page, "per_page": per_page, "glyphs": rows})

    @app.post("/api/review/<upload_id>/glyphs/<int:glyph_id>")
    def review_decide_api(upload_id: str, glyph_id: int):
        up = reviews.ready(upload_id)
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise GlyphTrainError('send JSON: {"action": "accept" | "change" | "unknown" | "reset", "label": ...}')
        row = reviews.decide(up, glyph_id, str(body.get("action", "")), body.get("label"))
        return jsonify({**row, "decided": len(up.decisions)})

    @app.get("/api/labels")
    def labels_api():
        return jsonify(reviews.find_labels(request.args.get("q", ""), limit=int_arg("limit", 30, 1, 200)))

    @app.get("/img/review/<upload_id>/<int:glyph_id>.png")
    def review_image(upload_id: str, glyph_id: int):
        return png(reviews.image(reviews.ready(upload_id), glyph_id))

    @app.get("/review/<upload_id>/labels.csv")
    def review_csv(upload_id: str):
        up = reviews.ready(upload_id)
        return send_file(reviews.write_csv(up), mimetype="text/csv", as_attachment=True,
                         download_name=f"{Path(up.name).stem}-labels.csv", max_age=0)

    @app.get("/review/<upload_id>/repaired")
    def review_repaired(upload_id: str):
        up = reviews.ready(upload_id)
        path, summary = reviews.write_repaired(up)
        response = send_file(path, mimetype="font/sfnt", as_attachment=True,
                             download_name=f"{Path(up.name).stem}-repaired{path.suffix}", max_age=0)
        response.headers["X-Repair-Summary"] = summary.encode("ascii", "replace").decode()[:2000]
        return response

    return app
