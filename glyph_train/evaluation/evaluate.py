"""Evaluation: the trainer's validation pass, and `glyph-train evaluate` of an export on any glyphs.db.

Both end in `metrics.evaluate_embeddings` (classification top-k + exact FAISS retrieval), run on the main
process over outputs collected with `gather_for_metrics`, which drops the samples Accelerate repeats to
give every process an equal share of the last batch.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from glyph_train.errors import GlyphTrainError
from glyph_train.evaluation.calibration import balance_other, export_other_balance, export_temperature, fit_temperature
from glyph_train.evaluation.metrics import (confused_pairs, equivalent_top1, evaluate_embeddings, nearest_neighbours,
                                            predictions)
from glyph_train.training.tracking import json_safe

NUM_EXAMPLE_QUERIES = 4
NUM_CONFUSED_PAIRS = 30


@torch.no_grad()
def collect_outputs(model: torch.nn.Module, loader, accelerator: Accelerator) -> dict[str, np.ndarray]:
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {"logits": [], "embedding": [], "label": [], "index": []}
    for batch in loader:
        out = model(batch["image"])
        gathered = accelerator.gather_for_metrics(
            (out["logits"].float(), out["embedding"].float(), batch["label"], batch["index"]))
        for key, value in zip(parts, gathered):
            parts[key].append(value.cpu())
    return {k: torch.cat(v).numpy() for k, v in parts.items()}


def evaluate_model(model: torch.nn.Module, loader, char_classes: np.ndarray, accelerator: Accelerator,
                   seed: int, fonts: np.ndarray | None = None, images=None,
                   other: int | None = None, other_ratio: float | None = None) -> tuple[dict, dict]:
    """Metrics (identical on every process) and a few retrieval examples (main process only). With the
    dataset's per-row `fonts` and `images`, also top1_equiv (identical outline = identical cached image).
    Rows of the `other` class (--others-per-label) count as unknown labels: no top-k, no retrieval query
    (they stay in the gallery), so the metrics are those of the real labels; the temperature is fitted
    on every row, since label-font reads the other class's probability too, and the metrics use the
    logits inference uses (the other class balanced by `other_ratio`: calibration.py)."""
    out = collect_outputs(model, loader, accelerator)
    result: list = [None, None]
    if accelerator.is_main_process:
        equivalence = {}
        if fonts is not None and images is not None:
            rows = out["index"]
            equivalence = {"fonts": fonts[rows], "outline_hashes": [
                hashlib.blake2b(np.asarray(images[i]).tobytes(), digest_size=12).digest() for i in rows.tolist()]}
        temperature = fit_temperature(out["logits"], out["label"])  # stored in the export
        metrics = evaluate_embeddings(balance_other(out["logits"], other, other_ratio, temperature), out["embedding"],
                                      scored_labels(out["label"], other), char_classes[out["index"]], seed=seed,
                                      **equivalence)
        metrics["temperature"] = temperature
        result = [metrics, example_queries(out, seed)]
    broadcast_object_list(result)  # every process needs the metric that picks the best checkpoint
    model.train()
    return result[0], result[1]


def scored_labels(labels: np.ndarray, other: int | None) -> np.ndarray:
    """Labels as the metrics score them: rows of the `other` class (--others-per-label) become -1, unknown:
    they stay in the retrieval gallery but are neither a top-k item nor a query."""
    return labels if other is None else np.where(labels == other, -1, labels)


def example_queries(out: dict[str, np.ndarray], seed: int, k: int = 10) -> dict:
    n = len(out["label"])
    queries = np.random.default_rng(seed).choice(n, size=min(NUM_EXAMPLE_QUERIES, n), replace=False)
    _, neighbours = nearest_neighbours(out["embedding"], queries, k=min(k, max(1, n - 1)))
    return {"rows": out["index"].tolist(), "labels": out["label"].tolist(), "queries": queries.tolist(),
            "neighbours": neighbours.tolist()}


def log_retrieval_examples(log, examples: dict, dataset, label_names: list[str], step: int) -> None:
    """A W&B image per query: the query glyph, then its top-k neighbours, each captioned with its label."""
    if not examples:
        return
    from glyph_train.cache.show import contact_sheet

    rows, labels = examples["rows"], examples["labels"]
    for qi, (q, nbrs) in enumerate(zip(examples["queries"], examples["neighbours"])):
        cells = [q, *[n for n in nbrs if n >= 0]]
        images = [np.asarray(dataset.images[rows[c]]) for c in cells]
        captions = [("query " if c == q else "") + label_names[labels[c]] for c in cells]
        sheet = contact_sheet(images, captions, cols=len(cells))
        log.log_images(f"retrieval/query_{qi}", np.asarray(sheet), caption=captions[0], step=step)


# ----------------------------------------------------------------------------------- glyph-train evaluate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from glyph_train.cache.pipeline import FORWARD_BATCH_FLAG
    from glyph_train.cache.raster import RENDER_FLAGS
    from glyph_train.corpus.db import DB_FLAG, add_filter_arguments
    from glyph_train.model.export import CHECKPOINT_FLAG

    CHECKPOINT_FLAG.add(parser, required=True)
    DB_FLAG.add(parser, required=True)
    # an override: the export says which fit the model was trained with
    RENDER_FLAGS["fit"].variant(default=None, default_text="the one the model was trained with").add(parser)
    parser.add_argument("--out", required=True, help="metrics JSON to write")
    FORWARD_BATCH_FLAG.add(parser)
    add_filter_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from glyph_train.corpus.db import filter_from_args
    from glyph_train.model.export import EXPORT_FILES, load_export
    from glyph_train.outputs import check_outputs, existing_file

    check_outputs({"--out": args.out}, {"--db": args.db, "--labels": existing_file(args.labels),
                                        "--checkpoint": [Path(args.checkpoint) / f for f in EXPORT_FILES]})
    model, label_names, config = load_export(Path(args.checkpoint))
    fit = args.fit or config.get("fit", "tight")
    rows: list = []  # (GlyphMeta, outline digest) of each embedded glyph
    logits, embeddings, names, char_classes, skipped = embed_selection(
        model, Path(args.db), filter_from_args(args), int(config["img_size"]), fit, args.batch_size, rows=rows)
    other, other_ratio = export_other_balance(config, label_names)
    logits = balance_other(logits, other, other_ratio, export_temperature(config))
    index = {name: i for i, name in enumerate(label_names)}
    # labels the model never saw keep distinct ids past its classes: excluded from top-k, kept in retrieval
    unknown: dict[str, int] = {}
    for name in names:
        if name not in index and name not in unknown:
            unknown[name] = len(label_names) + len(unknown)
    labels = scored_labels(np.array([index[n] if n in index else unknown[n] for n in names]), other)
    fonts, digests = [m.font for m, _ in rows], [d for _, d in rows]
    metrics = evaluate_embeddings(logits, embeddings, labels, char_classes, fonts=fonts, outline_hashes=digests,
                                  families=[m.family for m, _ in rows])
    metrics["unknown_labels"] = sorted(unknown)
    metrics["rows_skipped"] = skipped
    out = Path(args.out)
    pairs = confused_pairs(logits, labels, NUM_CONFUSED_PAIRS, equivalent_top1(logits, labels, fonts, digests))
    confusions = write_confusions(out, pairs, labels, predictions(logits), rows, label_names, Path(args.db),
                                  int(config["img_size"]), fit)
    out.write_text(json.dumps(json_safe(metrics), indent=2, allow_nan=False))
    print(f"{len(names)} glyphs, {len(unknown)} labels unknown to the model "
          f"({metrics['num_unknown_labels']} glyphs excluded from top-k); "
          + "  ".join(f"{k}={metrics[k]:.4f}" for k in ("top1", "top1_equiv", "top5", "hit_at_10", "map_at_r",
                                                          "effect_size")))
    print(f"wrote {args.out}" + "".join(f", {p}" for p in confusions))
    return 0


def confusion_paths(out: Path) -> tuple[Path, Path]:
    """Where the confused pairs go, beside the metrics JSON: OUT_STEM.confusions.json / .png."""
    return out.with_name(out.stem + ".confusions.json"), out.with_name(out.stem + ".confusions.png")


def write_confusions(out: Path, pairs: list[dict], labels: np.ndarray, predicted: np.ndarray, rows: list,
                     label_names: list[str], db: Path, img_size: int, fit: str) -> list[Path]:
    """The most confused label pairs as JSON (names, counts, how many top1_equiv forgives) and a contact sheet:
    per pair, one misclassified glyph and the predicted label as the same font draws it (else any font)."""
    from glyph_train.cache.raster import RenderParams, render
    from glyph_train.cache.show import contact_sheet
    from glyph_train.corpus.db import iter_contours

    json_path, png_path = confusion_paths(out)
    named = [{**p, "true": label_names[p["true"]], "predicted": label_names[p["predicted"]]} for p in pairs]
    json_path.write_text(json.dumps(named, indent=2))
    if not pairs:
        return [json_path]
    by_font_label = {(meta.font, int(lab)): i for i, ((meta, _), lab) in enumerate(zip(rows, labels))}
    first_of_label = {}
    for i, lab in enumerate(labels.tolist()):
        first_of_label.setdefault(lab, i)
    cells: list[tuple[int, str]] = []  # (row, caption)
    for p, name in zip(pairs, named):
        example = int(np.flatnonzero((labels == p["true"]) & (predicted == p["predicted"]))[0])
        other = by_font_label.get((rows[example][0].font, p["predicted"]), first_of_label.get(p["predicted"]))
        identical = f" ({p['equivalent']} same)" if p["equivalent"] else ""  # forgiven by top1_equiv
        cells.append((example, f"{name['true']} ×{p['count']}{identical}\nas {name['predicted']}"))
        if other is not None:
            same = rows[other][0].font == rows[example][0].font
            cells.append((other, f"{name['predicted']}\n{'same font' if same else 'other font'}"))
        else:
            cells.append((example, "(no glyph of\nthat label)"))
    params = RenderParams(img_size=img_size, fit=fit)
    wanted = [rows[i][0].glyph_id for i, _ in cells]
    contours = dict(iter_contours(db, list(dict.fromkeys(wanted))))
    images = [render(contours[g], params, rows[i][0].em) for (i, _), g in zip(cells, wanted)]
    contact_sheet(images, [c for _, c in cells], cols=6).save(png_path)
    return [json_path, png_path]


@torch.no_grad()
def embed_selection(model: torch.nn.Module, db: Path, flt, img_size: int, fit: str, batch_size: int,
                    rows: list | None = None):
    """Render and embed the selected glyphs batch by batch (never all images in memory); rows whose
    outline fails to render are skipped and counted. `rows`, if given, gets (GlyphMeta, digest of the
    contours text) of each embedded glyph, in output order."""
    from glyph_train.cache.pipeline import RenderReport, model_outputs, render_rows
    from glyph_train.cache.raster import RenderParams
    from glyph_train.corpus.db import iter_contours, select_glyphs

    selection = select_glyphs(db, flt)
    params = RenderParams(img_size=img_size, fit=fit)
    by_id = {m.glyph_id: m for m in selection.glyphs}
    contours = iter_contours(db, list(by_id))
    report = RenderReport()
    logits, embeddings, names, classes = [], [], [], []
    for _ in range(0, len(by_id), batch_size):
        chunk = [(gid, text, by_id[gid].em) for gid, text in itertools.islice(contours, batch_size)]
        done = render_rows(chunk, params, skip_blank=False, key_name="glyph_id")
        report.merge(done.report)
        report.check(db, len(selection.glyphs))  # stops once most rows fail
        if not done.keys:
            continue
        lg, emb = model_outputs(model, done.images, batch_size)
        logits.append(lg)
        embeddings.append(emb)
        names += [by_id[gid].label for gid in done.keys]
        classes += [by_id[gid].char_class for gid in done.keys]
        if rows is not None:
            texts = {gid: text for gid, text, _ in chunk}
            rows += [(by_id[gid], hashlib.blake2b((texts[gid] or "").encode(), digest_size=12).digest())
                     for gid in done.keys]
    if not names:
        raise GlyphTrainError(f"{db}: no glyph could be rendered with these filters; nothing to evaluate"
                              + (f" ({report.summary()})" if report.failed else ""))
    if report.failed:
        print(f"evaluate: {report.summary()}")
    skipped = {**selection.skipped, "unrenderable": report.failed}
    return np.concatenate(logits), np.concatenate(embeddings), names, np.asarray(classes, dtype=object), skipped

