"""`glyph-train prepare`: render a glyphs.db once into a fingerprinted Hugging Face DatasetDict cache.

Pipeline: select metadata (filters, skip counts, content hash; corpus/db.py) -> split (splits.py) -> label index
-> fingerprint -> reuse OUT if its fingerprint matches, else render in parallel into a temp dir next to
OUT and rename it into place. Rendering streams: worker processes take shards of a few hundred rows, each
opens its own read-only connection, fetches contours in chunks and returns an image block that the main
process appends to an Arrow file on disk, so memory stays flat however large the DB is.

On disk (OUT/):
  dataset_dict.json, train/, validation/   `DatasetDict.save_to_disk`; columns: image (uint8 S x S,
                                           Array2D; C x S x S, Array3D, for C fits), label, label_name, glyph_id, font, family, style,
                                           char_class, joining_group; rows in ascending glyph_id
  labels.json                              label name -> index (indices = sorted label names) + counts
  prepare.json                             fingerprint, parameters, the selection/render/split report, and
                                           `files`: every file this cache wrote (only those are ever replaced)

reader.py opens it for training: `images_view` gives numpy views straight over the Arrow memory map.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shutil
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from glyph_train.atomic import replace_dir
from glyph_train.cache.pipeline import RenderReport, render_rows
from glyph_train.cache.raster import RENDER_FLAGS, RENDERER_VERSION, RenderParams
from glyph_train.cache.reader import INFO_FILE, LABELS_FILE, PreparedData, column_array, load_prepared
from glyph_train.cache.splits import SPLIT_FLAG, SPLIT_VERSION, VAL_FRAC_FLAG, SplitResult, split_glyphs
from glyph_train.corpus.db import (DB_FLAG, GlyphFilter, GlyphMeta, Selection, add_filter_arguments,
                                   filter_from_args, iter_contours, select_glyphs)
from glyph_train.corpus.font_rows import EmBox
from glyph_train.errors import GlyphTrainError
from glyph_train.flags import Flag
from glyph_train.outputs import check_free_space, check_output_dir, check_outputs, declare, existing_file

CACHE_FORMAT = 1  # bump when the on-disk layout or column meaning changes
SHARD_ROWS = 500  # rows per render task: 8 MB of 128 px images in flight, a smooth progress bar
LEGACY_LAYOUT = ("dataset_dict.json", "train", "validation", LABELS_FILE, INFO_FILE)  # caches without `files`
COLUMNS = ("image", "label", "label_name", "glyph_id", "font", "family", "style", "char_class", "joining_group")


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours taskset/cgroup CPU sets, unlike os.cpu_count()
    except AttributeError:
        return os.cpu_count() or 1


NUM_PROC_FLAG = Flag("--num-proc", "processes that render the cache", max(1, min(8, _usable_cpus())), type=int,
                     default_text="the CPUs available, at most 8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    DB_FLAG.add(parser, required=True)
    parser.add_argument("--out", required=True, type=Path, help="cache directory to write (or reuse)")
    for flag in (*RENDER_FLAGS.values(), SPLIT_FLAG, VAL_FRAC_FLAG, NUM_PROC_FLAG):
        flag.add(parser)
    add_filter_arguments(parser)


def run(args: argparse.Namespace) -> int:
    params = RenderParams.from_args(args)
    check_outputs({"--out": args.out}, {"--db": args.db, "--labels": existing_file(args.labels)})
    declare(args.out, "--out")
    prepare(args.db, args.out, params, args.split, args.val_frac, args.seed, args.num_proc, filter_from_args(args))
    return 0


def cache_features(params: RenderParams):
    import datasets

    shape = params.image_shape
    array = datasets.Array2D if len(shape) == 2 else datasets.Array3D
    return datasets.Features({
        # ArrayND stores nested lists of uint8: one contiguous values buffer per chunk -> zero-copy numpy view.
        "image": array(shape, "uint8"),
        "label": datasets.Value("int64"),
        "label_name": datasets.Value("string"),
        "glyph_id": datasets.Value("int64"),
        "font": datasets.Value("string"),
        "family": datasets.Value("string"),
        "style": datasets.Value("string"),
        "char_class": datasets.Value("string"),
        "joining_group": datasets.Value("string"),
    })


def fingerprint_of(sel: Selection, params: RenderParams, split: str, val_frac: float, seed: int,
                   flt: GlyphFilter) -> str:
    """sha256 of everything the cache's bytes depend on; num_proc is left out (it does not change them)."""
    key = {"format": CACHE_FORMAT, "renderer": RENDERER_VERSION, "params": asdict(params),
           "split": split, "split_version": SPLIT_VERSION,
           "val_frac": val_frac, "seed": seed, "filter": flt.to_dict(), "content": sel.content_hash}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------- prepare


def prepare(db: Path, out: Path, params: RenderParams, split: str = "font", val_frac: float = 0.1, seed: int = 0,
            num_proc: int = 1, flt: GlyphFilter = GlyphFilter(), per_fingerprint: bool = False) -> PreparedData:
    """Render `db` into the cache at `out`, or reuse `out` when its fingerprint matches. With
    `per_fingerprint`, `out` is a folder of caches and this one is `out/<fingerprint[:16]>`, so caches made
    with other settings are neither rebuilt nor replaced."""
    t0 = time.perf_counter()
    db, out = Path(db), check_output_dir(out, writable=False)  # a read-only cache can still be reused
    check_outputs({"cache": out}, {"--db": db})
    sel = select_glyphs(db, flt, hash_content=True)
    print(f"prepare: {sel.stats.summary()}")
    if not sel.glyphs:
        raise GlyphTrainError(f"{db}: no glyphs left to prepare after filtering ({sel.stats.summary()})")
    fp = fingerprint_of(sel, params, split, val_frac, seed, flt)
    if per_fingerprint:
        out = out / fp[:16]
    if _cached_fingerprint(out) == fp:
        data = load_prepared(out)
        data.cache_hit = True
        print(f"prepare: cache hit: {out} (fingerprint {fp[:12]}): {len(data.train):,} train / "
              f"{len(data.validation):,} validation, {len(data.label_names):,} labels")
        return data
    _check_replaceable(out)
    check_output_dir(out)
    # Every image is written twice before the staging copy goes: the render's Arrow file, then the saved cache.
    check_free_space(out, 2 * len(sel.glyphs) * int(np.prod(params.image_shape)),
                     f"rendering {len(sel.glyphs):,} glyphs at {'x'.join(map(str, params.image_shape))} px",
                     "lower --img-size, select fewer glyphs, or choose a folder on a bigger disk")

    parts = split_glyphs(sel.glyphs, split, val_frac, seed)
    print(f"prepare: {parts.summary()}")
    label_names = sorted({sel.glyphs[i].label for i in parts.train})
    index = {name: k for k, name in enumerate(label_names)}

    _remove_stale_stages(out)
    stage = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        dsd, render_skips, first_error = _render_splits(db, sel.glyphs, parts, index, params, num_proc, stage)
        dsd, late_drops = _drop_untrained_labels(dsd, len(label_names))
        counts = _counts(dsd, len(label_names))
        info = {
            "fingerprint": fp, "format": CACHE_FORMAT, "renderer": RENDERER_VERSION, "db": str(db.resolve()),
            "params": asdict(params), "split": split, "val_frac": val_frac, "seed": seed, "filter": flt.to_dict(),
            "selection": sel.stats.to_dict(), "render_skips": render_skips,
            "first_render_error": first_error,
            "split_report": {"train": len(dsd["train"]), "validation": len(dsd["validation"]),
                             "val_families": parts.val_families,
                             "dropped_val_rows": parts.dropped_val_rows + late_drops[0],
                             "dropped_val_labels": parts.dropped_val_labels + late_drops[1]},
            "num_labels": len(label_names), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        final = stage / "data"
        # An empty split needs one (empty) shard file, or load_from_disk cannot open it.
        dsd.save_to_disk(str(final), num_shards={k: 1 for k, v in dsd.items() if len(v) == 0} or None)
        _write_json(final / LABELS_FILE, {"fingerprint": fp, "num_labels": len(label_names), "labels": [
            {"name": n, "index": k, "count": int(counts[0][k] + counts[1][k]), "train": int(counts[0][k]),
             "validation": int(counts[1][k])} for k, n in enumerate(label_names)]})
        info["files"] = sorted([*_files_under(final), INFO_FILE])
        _write_json(final / INFO_FILE, info)  # written last: its presence marks a complete cache
        del dsd  # release the staging files' memory maps before moving them
        replace_dir(final, out, owned=_foreign_files)  # re-checked: a file may have appeared while rendering
    finally:
        shutil.rmtree(stage, ignore_errors=True)

    data = load_prepared(out)
    if any(render_skips.values()):
        print("prepare: skipped at render time: " + ", ".join(f"{v:,} {k.replace('_', ' ')}"
                                                              for k, v in render_skips.items() if v))
    if late_drops[0]:
        print(f"prepare: dropped {late_drops[0]:,} validation rows whose label lost all train rows to render skips")
    print(f"prepare: {len(data.train):,} train / {len(data.validation):,} validation, {len(label_names):,} labels; "
          f"wrote {out} in {time.perf_counter() - t0:.1f} s (fingerprint {fp[:12]})")
    return data


def _cached_fingerprint(out: Path) -> str | None:
    try:
        return json.loads((out / INFO_FILE).read_text())["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_replaceable(out: Path) -> None:
    """Only ever replace an earlier cache or an empty directory, never someone's other files."""
    if out.exists() and not out.is_dir():
        raise GlyphTrainError(f"{out} is a file, not a cache directory; choose another --out")
    foreign = _foreign_files(out) if out.exists() else []
    if foreign and not (out / INFO_FILE).exists():
        raise GlyphTrainError(f"{out} exists and is not a glyph-train cache; choose another --out or remove it")
    if foreign:
        raise GlyphTrainError(f"{out} holds files glyph-train did not write ({', '.join(foreign[:3])}"
                              f"{', ...' if len(foreign) > 3 else ''}); move them out of the cache or "
                              "choose another --out")


def _files_under(root: Path) -> list[str]:
    return [(Path(d) / f).relative_to(root).as_posix() for d, _, names in os.walk(root) for f in names]


def _foreign_files(out: Path) -> list[str]:
    """What in `out` an earlier prepare did not write, by its manifest (prepare.json `files`); a folder
    that holds none of the cache's files is reported whole, without walking into it."""
    try:
        listed = json.loads((out / INFO_FILE).read_text(encoding="utf-8")).get("files")
        legacy = listed is None
    except (OSError, ValueError, AttributeError):
        listed, legacy = [], False
    owned = set(listed or [])
    owned_dirs = {p.as_posix() for f in owned for p in Path(f).parents if p != Path(".")}
    foreign = []
    for d, dirs, names in os.walk(out):
        rel = Path(d).relative_to(out)
        for name in list(dirs):
            entry = (rel / name).as_posix()
            if not (entry in owned_dirs or legacy and entry.split("/")[0] in LEGACY_LAYOUT):
                foreign.append(entry + "/")
                dirs.remove(name)
        for name in names:
            entry = (rel / name).as_posix()
            mine = entry in owned or legacy and entry.split("/")[0] in LEGACY_LAYOUT
            datasets_cache = rel.as_posix() in ("train", "validation") and name.startswith("cache-")
            if not (mine or datasets_cache):
                foreign.append(entry)
    return sorted(foreign)


def _remove_stale_stages(out: Path) -> None:
    """Temp dirs left by a killed prepare (`.OUT.tmp-PID`, `.OUT.old-PID`) whose process is gone."""
    if not out.parent.is_dir():
        return
    for p in out.parent.glob(f".{out.name}.*-*"):
        kind, _, pid = p.name[len(out.name) + 2:].partition("-")
        if kind not in ("tmp", "old") or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except PermissionError:  # alive, someone else's
            pass


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------- rendering


def _shard_rows(glyphs: Sequence[GlyphMeta], indices: Sequence[int], index: dict[str, int],
                num_proc: int) -> list[list[tuple]]:
    """Plain tuples (cheap to pickle to workers) in ascending glyph_id order, cut into shards of at most
    SHARD_ROWS rows and at least 4 per process, so that workers stay balanced."""
    rows = []
    for i in indices:
        g = glyphs[i]
        rows.append((g.glyph_id, index[g.label], g.label, g.font, g.family, g.style, g.char_class, g.joining_group,
                     (g.em.upem, g.em.ascent, g.em.descent)))
    size = max(1, min(SHARD_ROWS, -(-len(rows) // (4 * num_proc))))
    return [rows[k: k + size] for k in range(0, len(rows), size)]


_META = ("label", "label_name", "glyph_id", "font", "family", "style", "char_class", "joining_group")


def _render_shard(task: tuple[str, dict, list[tuple]]) -> tuple[np.ndarray, dict[str, list], RenderReport]:
    """Worker: own read-only connection, contours fetched in chunks; returns an image block, its metadata
    columns and what did not render."""
    db, params, rows = task
    by_id = {row[0]: row for row in rows}
    done = render_rows(((gid, text, EmBox(*by_id[gid][8])) for gid, text in iter_contours(db, list(by_id))),
                       RenderParams(**params), key_name="glyph_id")
    kept = [by_id[gid] for gid in done.keys]
    cols = {c: [row[k] for row in kept] for c, k in zip(_META, (1, 2, 0, 3, 4, 5, 6, 7))}
    return done.images, cols, done.report


def _render_shard_to_file(task: tuple[str, dict, list[tuple], str]) -> str:
    """Pool worker: render a shard into a file of the stage and send back only its path. Ctrl-C terminates
    the pool; a worker killed while writing a multi-MB result into the pool's pipe left half a message, and
    the pool's result thread then waited for the rest forever (prepare hung in about 1 of 15 interrupts).
    A path is one pipe write of under PIPE_BUF bytes, which the kernel never splits."""
    *shard_task, path = task
    with open(path, "wb") as f:
        pickle.dump(_render_shard(tuple(shard_task)), f, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def _load_shard(path: str) -> tuple[np.ndarray, dict[str, list], RenderReport]:
    with open(path, "rb") as f:
        result = pickle.load(f)
    os.unlink(path)
    return result


def _ignore_sigint() -> None:
    """Pool initializer: Ctrl-C reaches the whole process group, but only the parent may act on it (it
    terminates the pool); a worker dying of KeyboardInterrupt mid-task can leave the pool's queue locked,
    which is how Ctrl-C used to hang prepare."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _arrow_table(images: np.ndarray, cols: dict[str, list], features):
    """Build the Arrow table straight from the image block: no per-row encoding through Python lists."""
    import pyarrow as pa

    storage = pa.array(images.reshape(-1))  # zero-copy over the block
    for axis in range(images.ndim - 1, 0, -1):  # nest innermost first: rows of W, then of H (then of C)
        width = images.shape[axis]
        storage = pa.ListArray.from_arrays(pa.array(np.arange(0, len(storage) + 1, width, dtype=np.int32)), storage)
    schema = features.arrow_schema
    arrays = [pa.ExtensionArray.from_storage(schema.field("image").type, storage)]
    arrays += [pa.array(cols[c], type=schema.field(c).type) for c in _META]
    return pa.Table.from_arrays(arrays, schema=schema)


def _render_splits(db: Path, glyphs: Sequence[GlyphMeta], parts: SplitResult, index: dict[str, int],
                   params: RenderParams, num_proc: int, stage: Path):
    import datasets
    import multiprocessing as mp

    from datasets.arrow_writer import ArrowWriter
    from tqdm.auto import tqdm

    features = cache_features(params)
    report = RenderReport()
    tasks = {name: [(str(db), asdict(params), rows) for rows in _shard_rows(glyphs, idx, index, num_proc)]
             for name, idx in (("train", parts.train), ("validation", parts.validation))}
    procs = max(1, min(num_proc, max(len(t) for t in tasks.values())))
    # forkserver, not fork: the trainer calls prepare() with torch threads and a process group alive, and a
    # forked child of that can deadlock. Results arrive in shard order.
    pool = (mp.get_context("forkserver" if os.name == "posix" else "spawn").Pool(procs, initializer=_ignore_sigint)
            if procs > 1 else None)
    out = {}
    try:
        for name, split_tasks in tasks.items():
            total = sum(len(t[2]) for t in split_tasks)
            if not total:
                out[name] = datasets.Dataset.from_dict({c: [] for c in COLUMNS}, features=features)
                continue
            path = stage / f"{name}.arrow"
            writer = ArrowWriter(features=features, path=str(path))
            if pool:
                files = [(*t, str(stage / f"{name}-{i:06d}.pkl")) for i, t in enumerate(split_tasks)]
                results = map(_load_shard, pool.imap(_render_shard_to_file, files))
            else:
                results = map(_render_shard, split_tasks)
            with tqdm(total=total, unit=" glyphs", desc=f"render {name}", smoothing=0.1) as bar:
                for images, cols, shard in results:
                    report.merge(shard)
                    report.check(db, len(parts.train) + len(parts.validation))  # stops once most rows fail
                    if len(images):
                        writer.write_table(_arrow_table(images, cols, features))
                    bar.update(len(images) + shard.failed + shard.blank)
            writer.finalize()
            writer.close()
            out[name] = datasets.Dataset.from_file(str(path))
    finally:
        if pool is not None:
            pool.terminate()
    skips = {"render_failed": report.failed, "blank": report.blank}
    if len(out["train"]) == 0:
        raise GlyphTrainError(f"{db}: no training glyph could be rendered ({report.summary()})")
    if report.failed:
        print(f"prepare: {report.failed_line()}")
    return datasets.DatasetDict(out), skips, report.first_error


def _drop_untrained_labels(dsd, num_labels: int):
    """Render skips can empty a label's train side; its validation rows then go too (counted)."""
    train_counts = np.bincount(column_array(dsd["train"], "label"), minlength=num_labels)
    val_labels = column_array(dsd["validation"], "label")
    bad = train_counts[val_labels] == 0 if len(val_labels) else np.zeros(0, bool)
    if not bad.any():
        return dsd, (0, 0)
    keep = np.nonzero(~bad)[0]
    dsd["validation"] = dsd["validation"].select(keep)
    return dsd, (int(bad.sum()), len(set(val_labels[bad].tolist())))


def _counts(dsd, num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    return tuple(np.bincount(column_array(dsd[s], "label"), minlength=num_labels) for s in ("train", "validation"))
