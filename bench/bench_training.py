"""Benchmarks 1 and 2 of the trainer issue, in one run on one prepared cache:

  (1) trainer vs bare loop: steady-state images/s of the real `glyph_train.train.train(cfg)` and of a bare
      PyTorch loop with the same model, batch, loss (CE + w·SupCon), AdamW over the same param groups,
      gradient clipping, and the same Dataset/DataLoader settings. Target: trainer/bare >= 0.95.
  (2) loader + augmentation: images/s of that DataLoader (GlyphImages with augmentation, --num-workers
      workers) iterated without a model, against the training rate from (1). Target: >= 5x.
  (3) bf16 vs fp32 (issue 9): (1) for each --precision (the trainer's --mixed-precision; the bare loop runs
      under torch.autocast(bfloat16) for bf16, as Accelerate does) and each --img-size, all in one run.
  (4) torch.compile (issue 9): with --compile no yes, (1) also for each compile setting (the trainer's
      --compile; the bare loop wraps its model in torch.compile). Compiling happens in the warmup steps.

The trainer is run in-process, unchanged, with --max-steps W+M --log-interval gcd(W, M); its rate is read
from its own metrics.jsonl: (step_b - step_a) * batch / (time_b - time_a) between the records at steps W
and W+M (the `time` field; the records' `img_per_s` averages from the epoch start, worker start-up
included). The bare loop is timed over the same steps W+1..W+M, with a `.item()` at both ends as the
trainer's log record does (a device sync on GPU). Both sides also report images per CPU-second of this
process (the model's threads; DataLoader workers are other processes), steadier than wall time when other
jobs share the machine; for the trainer, the CPU time is noted as it writes those two records. Runs
alternate, trainer first then bare first, so a drift of the machine's load hits both sides; medians are
reported. Both sides share this process and so its torch thread count (--threads). The trainer's final
evaluation, checkpoint and export come after its last timed step and do not count.

    python bench/bench_training.py [--db DB --limit 5000] [--model levit_128s] [--img-size 128 [64 ...]]
        [--precision no [bf16 ...]] [--compile no [yes]] [--batch-size 64] [--warmup 3] [--steps 9] [--repeats 3] [--threads 1] [--num-workers N]
        [--workdir DIR] [--json PATH]

Without --db a glyphs.db is built from every installed fontpkg font (tests/dbfactory.py, ~14k glyphs);
a --db is opened read-only. Progress goes to stderr, one JSON object to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate.state import AcceleratorState, GradientState

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from dbfactory import LATIN, fontpkg_specs, write_db  # noqa: E402

import glyph_train.train as train_module  # noqa: E402
from glyph_train.cache.prepare import prepare  # noqa: E402
from glyph_train.cache.raster import RenderParams  # noqa: E402
from glyph_train.corpus.db import GlyphFilter  # noqa: E402
from glyph_train.training.distributed import native_bf16  # noqa: E402
from glyph_train.model.network import GlyphModel, param_groups  # noqa: E402
from glyph_train.training.config import TrainConfig  # noqa: E402
from glyph_train.training.data import make_loaders, open_training_data  # noqa: E402
from glyph_train.training.losses import supcon_loss  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load() -> float:
    return round(os.getloadavg()[0], 2)


# ---------------------------------------------------------------------------------------------- data


def prepared_cache(args: argparse.Namespace, work: Path, img_size: int) -> Path:
    db = args.db
    if db is None:
        db = work / "glyphs.db"
        if not db.exists():
            write_db(db, fontpkg_specs(), LATIN)
    cache = work / f"cache_{img_size}"
    with contextlib.redirect_stdout(sys.stderr):
        prepare(db, cache, RenderParams(img_size=img_size), split="font", val_frac=0.1, seed=0,
                num_proc=2, flt=GlyphFilter(limit=args.limit, seed=0))
    return cache


def bare_loader(cfg: TrainConfig) -> tuple[torch.utils.data.DataLoader, int, int]:
    """The trainer's training DataLoader, built as `load_training_data` + `make_loaders` build it (same
    Dataset, augmentation, workers, shuffling), minus the Accelerator. Returns it, the class count and the
    cache's image size."""
    data = open_training_data(cfg, Path(cfg.data))
    loader, _, _ = make_loaders(cfg, data)
    return loader, len(data.label_names), data.render["img_size"]


# ---------------------------------------------------------------------------------------------- (1)


@contextlib.contextmanager
def cpu_stamps(into: dict[int, float]):
    """Note this process's CPU time at each of the trainer's training-loss records. Measurement only: the
    trainer's MetricsLog is wrapped for the duration, its records are written unchanged."""
    original = train_module.MetricsLog

    class Stamped(original):
        def log(self, record: dict, step: int) -> None:
            if "loss" in record:
                into[step] = time.process_time()
            super().log(record, step)

    train_module.MetricsLog = Stamped
    try:
        yield
    finally:
        train_module.MetricsLog = original


def trainer_rate(cfg: TrainConfig, warmup: int, steps: int) -> tuple[float, float]:
    """img/s of train(cfg) between its metrics.jsonl records at steps `warmup` and `warmup + steps`, and
    img per CPU-second of this process over the same steps."""
    cpu: dict[int, float] = {}
    with contextlib.redirect_stdout(sys.stderr), cpu_stamps(cpu):
        train_module.train(cfg)
    # train() leaves Accelerate's singletons set up; the next run must start from scratch, as a new process would
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    records = [json.loads(line) for line in (Path(cfg.out_dir) / "metrics.jsonl").read_text().splitlines()]
    times = {r["step"]: r["time"] for r in records if "loss" in r}
    a, b = warmup, warmup + steps
    if a not in times or b not in times:
        raise SystemExit(f"trainer logged steps {sorted(times)}, need {a} and {b}: "
                         f"is the train split at least {b} batches?")
    images = steps * cfg.batch_size
    return images / (times[b] - times[a]), images / (cpu[b] - cpu[a])


def bare_rate(cfg: TrainConfig, warmup: int, steps: int) -> tuple[float, float]:
    """img/s and img per CPU-second of a plain PyTorch loop over steps warmup+1 .. warmup+steps."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    loader, num_classes, img_size = bare_loader(cfg)
    model = GlyphModel(cfg.model, num_classes=num_classes, embedding_dim=cfg.embedding_dim, img_size=img_size,
                       arcface_margin=cfg.arcface_margin, arcface_scale=cfg.arcface_scale, dropout=cfg.dropout)
    model.to(device)
    if cfg.compile:
        model = torch.compile(model)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.lr_backbone, cfg.lr_head, cfg.weight_decay))
    model.train()
    marks: dict[int, tuple[float, float]] = {}
    bf16 = cfg.mixed_precision == "bf16"
    for step, batch in enumerate(loader, 1):
        x, y = batch["image"].to(device, non_blocking=True), batch["label"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):  # forward only, as Accelerate
            out = model(x, y)
            ce = F.cross_entropy(out["logits"], y, label_smoothing=cfg.label_smoothing)
            loss = ce + cfg.emb_loss_weight * supcon_loss(out["embedding"], batch["group"].to(device),
                                                          cfg.emb_temperature)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step in (warmup, warmup + steps):
            loss.item()  # sync, like the trainer's log record
            marks[step] = (time.perf_counter(), time.process_time())
        if step == warmup + steps:
            break
    (wall_a, cpu_a), (wall_b, cpu_b) = marks[warmup], marks[warmup + steps]
    return steps * cfg.batch_size / (wall_b - wall_a), steps * cfg.batch_size / (cpu_b - cpu_a)


# ---------------------------------------------------------------------------------------------- (2)


def loader_rate(cfg: TrainConfig, batches: int) -> float:
    """img/s of the training DataLoader alone, after its first batch (worker start-up excluded)."""
    loader, _, _ = bare_loader(cfg)
    it = iter(loader)
    next(it)
    t, n = time.perf_counter(), 0
    for _, batch in zip(range(batches), it):
        n += len(batch["label"])
    return n / (time.perf_counter() - t)


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path,
                    help="existing glyphs.db, opened read-only (default: build one with tests/dbfactory.py)")
    ap.add_argument("--limit", type=int, default=5000, help="glyphs sampled from the DB into the cache")
    ap.add_argument("--model", default="levit_128s")
    ap.add_argument("--img-size", type=int, nargs="+", default=[128], help="one or more raster sizes")
    ap.add_argument("--precision", nargs="+", default=["no"], choices=("no", "bf16"),
                    help="the trainer's --mixed-precision values to compare (no = fp32)")
    ap.add_argument("--compile", nargs="+", default=["no"], choices=("no", "yes"),
                    help="the trainer's --compile settings to compare")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=3, help="optimizer steps before timing starts")
    ap.add_argument("--steps", type=int, default=9, help="timed optimizer steps per run")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each side, alternating")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads, both sides (default 1: on a shared 2-core machine a second thread that "
                         "shares a core with another process stalls every op at OpenMP's barrier)")
    ap.add_argument("--num-workers", type=int, default=TrainConfig.__dataclass_fields__["num_workers"].default,
                    help="DataLoader workers, both sides and the loader bench (default: the trainer's)")
    ap.add_argument("--loader-batches", type=int, default=60, help="batches timed in the loader bench")
    ap.add_argument("--workdir", type=Path, help="keep the DB, cache and run dirs here (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_training_"))
    work.mkdir(parents=True, exist_ok=True)

    caches = {size: prepared_cache(args, work, size) for size in args.img_size}

    variants = [(p, c) for p in args.precision for c in args.compile]  # (precision, compile)

    def config(run: str, size: int, precision: str, compile: str = "no") -> TrainConfig:
        return TrainConfig(data=str(caches[size]), model=args.model, batch_size=args.batch_size, epochs=1,
                           max_steps=args.warmup + args.steps, log_interval=math.gcd(args.warmup, args.steps),
                           retrieval_every=10**6, retrieval_cap=256, save_every=0, wandb_mode="disabled",
                           num_workers=args.num_workers, out_dir=str(work / run), seed=0,
                           mixed_precision=precision, compile=compile == "yes")

    res: dict = {"model": args.model, "img_sizes": args.img_size, "precisions": args.precision,
                 "compile": args.compile,
                 "batch_size": args.batch_size, "threads": torch.get_num_threads(), "num_workers": args.num_workers,
                 "warmup": args.warmup, "steps": args.steps, "cpus": os.cpu_count(),
                 "device": "cuda" if torch.cuda.is_available() else "cpu",
                 "cpu_native_bf16": native_bf16()[0], "load_start": load()}

    t = time.perf_counter()
    res["loader_img_per_s"] = {}
    for size in args.img_size:
        res["loader_img_per_s"][size] = round(loader_rate(config("loader", size, "no"), args.loader_batches), 1)
        log(f"loader {size} px: {res['loader_img_per_s'][size]} img/s ({args.num_workers} workers, load {load()})")

    # Every (size, variant, side) once per repeat; the side order flips each repeat and the variant order
    # with it, so a drift of the machine's load hits all alike.
    runs: list[dict] = []
    for r in range(args.repeats):
        for size in args.img_size:
            for precision, comp in variants if r % 2 == 0 else variants[::-1]:
                order = ("trainer", "bare") if r % 2 == 0 else ("bare", "trainer")
                for side in order:
                    load_before, t0 = load(), time.perf_counter()
                    measure = trainer_rate if side == "trainer" else bare_rate
                    wall, cpu = measure(config(f"{side}_{size}_{precision}_c{comp}_{r}", size, precision, comp),
                                        args.warmup, args.steps)
                    runs.append({"side": side, "img_size": size, "precision": precision, "compile": comp,
                                 "repeat": r, "img_per_s": round(wall, 2), "img_per_cpu_s": round(cpu, 2),
                                 "load_before": load_before, "load_after": load(),
                                 "wall_s": round(time.perf_counter() - t0, 1)})
                    log(f"{side} {size} px {precision} compile={comp} #{r}: {wall:.2f} img/s, {cpu:.2f} img/CPU-s "
                        f"(load {load_before} -> {load()}, {runs[-1]['wall_s']} s)")

    def median(side: str, size: int, precision: str, comp: str, key: str) -> float:
        return round(statistics.median(x[key] for x in runs if (x["side"], x["img_size"], x["precision"],
                                                                x["compile"]) == (side, size, precision, comp)), 2)

    results = []
    for size in args.img_size:
        for precision, comp in variants:
            row = {"img_size": size, "precision": precision, "compile": comp}
            for side in ("trainer", "bare"):
                row[f"{side}_img_per_s"] = median(side, size, precision, comp, "img_per_s")
                row[f"{side}_img_per_cpu_s"] = median(side, size, precision, comp, "img_per_cpu_s")
            row["trainer_over_bare"] = round(row["trainer_img_per_s"] / row["bare_img_per_s"], 3)
            row["trainer_over_bare_cpu"] = round(row["trainer_img_per_cpu_s"] / row["bare_img_per_cpu_s"], 3)
            row["loader_over_training"] = round(res["loader_img_per_s"][size] / row["trainer_img_per_s"], 1)
            results.append(row)
        by = {(row["precision"], row["compile"]): row for row in results if row["img_size"] == size}
        for (precision, comp), row in by.items():
            for side in ("trainer", "bare"):
                if precision == "bf16" and ("no", comp) in by:
                    row[f"{side}_bf16_over_fp32"] = round(row[f"{side}_img_per_s"] / by["no", comp][f"{side}_img_per_s"], 3)
                if comp == "yes" and (precision, "no") in by:
                    row[f"{side}_compiled_over_eager"] = round(
                        row[f"{side}_img_per_s"] / by[precision, "no"][f"{side}_img_per_s"], 3)
    res.update(results=results, runs=runs, load_end=load(), wall_s=round(time.perf_counter() - t, 1))
    print(json.dumps(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
