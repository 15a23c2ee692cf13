"""Evaluation: the trainer's validation pass, and `glyph-train evaluate` of an export on any glyphs.db.

Both end in `metrics.evaluate_embeddings` (classification top-k + exact FAISS retrieval), run on the main
process over outputs collected with `gather_for_metrics`, which drops the samples Accelerate repeats to
give every process an equal share of the last batch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from glyph_train.errors import GlyphTrainError
from glyph_train.metrics import evaluate_embeddings, nearest_neighbours
from glyph_train.tracking import json_safe

NUM_EXAMPLE_QUERIES = 4


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
                   seed: int) -> tuple[dict, dict]:
    """Metrics (identical on every process) and a few retrieval examples (main process only)."""
    out = collect_outputs(model, loader, accelerator)
    result: list = [None, None]
    if accelerator.is_main_process:
        metrics = evaluate_embeddings(out["logits"], out["embedding"], out["label"], char_classes[out["index"]],
                                      seed=seed)
        result = [metrics, example_queries(out, seed)]
    broadcast_object_list(result)  # every process needs the metric that picks the best checkpoint
    model.train()
    return result[0], result[1]


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
    from glyph_train.show import contact_sheet

    rows, labels = examples["rows"], examples["labels"]
    for qi, (q, nbrs) in enumerate(zip(examples["queries"], examples["neighbours"])):
        cells = [q, *[n for n in nbrs if n >= 0]]
        images = [np.asarray(dataset.images[rows[c]]) for c in cells]
        captions = [("query " if c == q else "") + label_names[labels[c]] for c in cells]
        sheet = contact_sheet(images, captions, cols=len(cells))
        log.log_images(f"retrieval/query_{qi}", np.asarray(sheet), caption=captions[0], step=step)


# ----------------------------------------------------------------------------------- glyph-train evaluate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from glyph_train.db import add_filter_arguments

    parser.add_argument("--checkpoint", required=True, help="an export directory (run_dir/export or run_dir/best)")
    parser.add_argument("--db", required=True, help="glyphs.db to evaluate on (opened read-only)")
    parser.add_argument("--fit", choices=("tight", "em"), help="raster fit (default: the one the model was trained with)")
    parser.add_argument("--out", required=True, help="metrics JSON to write")
    parser.add_argument("--batch-size", type=int, default=256)
    add_filter_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from glyph_train.db import filter_from_args
    from glyph_train.export import load_export

    model, label_names, config = load_export(Path(args.checkpoint))
    fit = args.fit or config.get("fit", "tight")
    logits, embeddings, names, char_classes, skipped = embed_selection(
        model, Path(args.db), filter_from_args(args), int(config["img_size"]), fit, args.batch_size)
    index = {name: i for i, name in enumerate(label_names)}
    # labels the model never saw keep distinct ids past its classes: excluded from top-k, kept in retrieval
    unknown: dict[str, int] = {}
    for name in names:
        if name not in index and name not in unknown:
            unknown[name] = len(label_names) + len(unknown)
    labels = np.array([index[n] if n in index else unknown[n] for n in names])
    metrics = evaluate_embeddings(logits, embeddings, labels, char_classes)
    metrics["unknown_labels"] = sorted(unknown)
    metrics["rows_skipped"] = skipped
    Path(args.out).write_text(json.dumps(json_safe(metrics), indent=2, allow_nan=False))
    print(f"{len(names)} glyphs, {len(unknown)} labels unknown to the model "
          f"({metrics['num_unknown_labels']} glyphs excluded from top-k); "
          + "  ".join(f"{k}={metrics[k]:.4f}" for k in ("top1", "top5", "hit_at_10", "map_at_r", "effect_size")))
    print(f"wrote {args.out}")
    return 0


@torch.no_grad()
def embed_selection(model: torch.nn.Module, db: Path, flt, img_size: int, fit: str, batch_size: int):
    """Render and embed the selected glyphs batch by batch (never all images in memory); rows whose
    outline fails to render are skipped and counted."""
    from glyph_train.db import iter_contours, select_glyphs
    from glyph_train.raster import RenderParams, render

    from glyph_train.prepare import RenderFailures

    selection = select_glyphs(db, flt)
    params = RenderParams(img_size=img_size, fit=fit)
    failures = RenderFailures(db, len(selection.glyphs))
    logits, embeddings, names, classes, images = [], [], [], [], []

    def flush() -> None:
        out = model(torch.from_numpy(np.stack(images)).unsqueeze(1).float().div_(255.0))
        logits.append(out["logits"].float().numpy())
        embeddings.append(out["embedding"].float().numpy())
        images.clear()

    for meta, (_, contours) in zip(selection.glyphs, iter_contours(db, [m.glyph_id for m in selection.glyphs])):
        try:
            images.append(render(contours, params, meta.em))
        except ValueError as e:
            failures.add(1, f"glyph_id {meta.glyph_id}: {e}")
            continue
        names.append(meta.label)
        classes.append(meta.char_class)
        if len(images) == batch_size:
            flush()
    if images:
        flush()
    if not names:
        raise GlyphTrainError(f"{db}: no glyph could be rendered with these filters; nothing to evaluate")
    if failures.count:
        print(f"evaluate: {failures.line()}")
    skipped = {**selection.skipped, "unrenderable": failures.count}
    return np.concatenate(logits), np.concatenate(embeddings), names, np.asarray(classes, dtype=object), skipped

