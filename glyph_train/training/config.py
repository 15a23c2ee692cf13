"""Every training flag in one place: a dataclass that the CLI, YAML files and W&B sweeps all fill.

Precedence: dataclass defaults < `--config run.yaml` < command-line flags. The resolved config is saved
in the run directory, and an export carries it, so a run can always be reproduced from its own files.
The flags that select and render the data are declared once, where prepare declares them (GlyphFilter,
RenderParams, splits, prepare): their fields here reuse those declarations.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from glyph_train.cache.prepare import NUM_PROC_FLAG
from glyph_train.cache.raster import RENDER_FLAGS
from glyph_train.cache.splits import SPLIT_FLAG, VAL_FRAC_FLAG
from glyph_train.corpus.db import FILTER_FLAGS
from glyph_train.errors import GlyphTrainError
from glyph_train.flags import flag_field as _flag
from glyph_train.flags import flags_of

# Fields that decide what a prepared cache contains: set them with --db, not with --data.
CACHE_FIELDS = ("db", "cache_dir", "limit", "exclude_shaped", "min_label_count", "drop_singletons",
                "char_classes", "labels", "others_per_label", "img_size", "fit", "split", "val_frac", "num_proc")


@dataclass
class TrainConfig:
    # data
    db: str | None = _flag(None, "glyphs.db to train on (rendered once into a cache under --cache-dir)")
    data: str | None = _flag(None, "a prepared cache directory (`glyph-train prepare`); used instead of --db")
    cache_dir: str | None = _flag(None, "folder of --db render caches, one per fingerprint, reused across runs "
                                        "(default: $GLYPH_TRAIN_CACHE, else $XDG_CACHE_HOME/glyph-train, "
                                        "else ~/.cache/glyph-train)")
    limit: int | None = FILTER_FLAGS["limit"].field()
    exclude_shaped: bool = FILTER_FLAGS["exclude_shaped"].field()
    min_label_count: int = FILTER_FLAGS["min_label_count"].field()
    drop_singletons: bool = FILTER_FLAGS["drop_singletons"].field()
    char_classes: str | None = FILTER_FLAGS["char_classes"].field()  # the flag's text: parsed by filter_from_args
    labels: str | None = FILTER_FLAGS["labels"].field()
    others_per_label: int = FILTER_FLAGS["others_per_label"].field()
    img_size: int = RENDER_FLAGS["img_size"].field()
    fit: str = RENDER_FLAGS["fit"].field()
    split: str = SPLIT_FLAG.field()
    val_frac: float = VAL_FRAC_FLAG.field()
    num_proc: int = NUM_PROC_FLAG.field(default=2, default_text=None)  # training's own default, as it always was
    num_workers: int = _flag(1, "DataLoader workers per training process (keep workers + threads <= cores)")
    augment: bool = _flag(True, "epoch-seeded augmentation of training images (--no-augment to turn off)")
    augment_strength: float = _flag(1.0, "scales every augmentation range (shift, zoom, rotation, slant, stroke, "
                                         "tone, width): 0.5 halves them")
    augment_width: float = _flag(0.0, "width jitter: glyphs condensed or extended by up to this fraction")
    pre_rasterize: bool = _flag(True, "accepted for the old CLI: rasterising once into a cache is always done")
    # model
    model: str = _flag("levit_128s", "any timm model name")
    embedding_dim: int = _flag(128, "size of the L2-normalised embedding")
    dropout: float = _flag(0.1, "dropout inside the embedding head")
    arcface_margin: float = _flag(0.0, "additive angular margin (radians) on the classifier; 0 = plain softmax")
    arcface_scale: float = _flag(30.0, "logit scale used with --arcface-margin")
    compile: bool = _flag(False, "torch.compile the model (inductor): 1.09x training at 64 px bf16 on a 2-core AMX CPU "
                                 "after ~90 s of compiling, slower at 128 px (BENCHMARKS.md section 11b); a launch "
                                 "config's dynamo_backend also turns it on")
    # optimisation
    epochs: int = _flag(10, "training epochs")
    batch_size: int = _flag(64, "batch size per process")
    grad_accum: int = _flag(1, "gradient accumulation steps")
    lr_backbone: float = _flag(1.5e-3, "peak LR of the backbone")
    lr_head: float = _flag(3e-3, "peak LR of the classifier and embedding heads")
    weight_decay: float = _flag(0.01, "AdamW weight decay (not on biases, norms, attention biases)")
    warmup_frac: float = _flag(0.05, "fraction of optimizer steps spent in linear warmup")
    lr_schedule: str = _flag("cosine", "after warmup", choices=("constant", "cosine"))
    grad_clip: float = _flag(1.0, "clip the global grad norm to this; 0 = no clipping (norm still logged)")
    mixed_precision: str = _flag(
        "auto", "auto: what the launch config says, else bf16 where the hardware has it natively (CUDA compute "
        "capability >= 8.0, CPU amx_bf16/avx512_bf16), else no (fp32)", choices=("auto", "no", "bf16", "fp16"))
    label_smoothing: float = _flag(0.0, "label smoothing of the cross-entropy")
    emb_loss_weight: float = _flag(0.3, "weight w of the SupCon term: loss = CE + w * SupCon")
    emb_temperature: float = _flag(0.07, "SupCon temperature")
    emb_ramp_epochs: float = _flag(0.0, "ramp w linearly from 0 over this many epochs")
    contrastive_grouping: str = _flag(
        "label", "positives for SupCon: same label, or hybrid (joining_group, else cc_<char_class>)",
        choices=("label", "hybrid"))
    classes_per_batch: int = _flag(0, "class-balanced batches: k classes x (batch_size // k) samples; 0 = shuffle")
    family_balance: float = _flag(0.0, "draw training glyphs with replacement, each weighted by (fonts in its "
                                       "family)^-A: 1 = every family weighs as one font; 0 = plain shuffle")
    label_balance: float = _flag(0.0, "also divide each glyph's draw weight by its label's total weight^B: 1 = "
                                      "every label drawn equally often (Arabic forms as often as Latin letters)")
    max_steps: int = _flag(0, "stop after this many optimizer steps (0 = run all epochs); for smoke runs")
    # evaluation
    retrieval_every: int = _flag(1, "evaluate every N epochs (and always at the end)")
    retrieval_cap: int = _flag(0, "evaluate on at most N validation glyphs (0 = all)")
    best_metric: str = _flag("hit_at_10", "metric that picks the best export (run_dir/best)", choices=(
        "top1", "top5", "hit_at_1", "hit_at_5", "hit_at_10", "precision_at_1", "map_at_r", "effect_size"))
    # run bookkeeping
    seed: int = FILTER_FLAGS["seed"].field()
    out_dir: str = _flag("runs/latest", "run directory: config, metrics.jsonl, checkpoints, export")
    resume: str | None = _flag(None, "a checkpoint directory, or 'auto' for the newest in --out-dir")
    overwrite: bool = _flag(False, "start afresh in a --out-dir that holds a run: the old run is moved aside "
                                   "to OUT_DIR.old-TIMESTAMP, never deleted")
    save_every: int = _flag(0, "also checkpoint every N optimizer steps (0 = each epoch only)")
    log_interval: int = _flag(50, "log training loss every N optimizer steps")
    wandb_project: str = _flag("glyph-train", "W&B project")
    wandb_mode: str = _flag("auto", "auto = online with WANDB_API_KEY, else offline", choices=("auto", "online", "offline", "disabled"))
    run_name: str | None = _flag(None, "W&B run name (default: the out-dir's name)")
    num_processes: int = _flag(0, "processes the launch asked for; the run refuses to start when it sees fewer (0 = detect)")
    suppress_warnings: bool = _flag(False, "silence Python warnings from libraries")

    def __post_init__(self) -> None:
        self.out_dir = os.path.expandvars(self.out_dir)  # e.g. runs/sweep/$WANDB_RUN_ID for sweep trials
        if not self.pre_rasterize:
            raise GlyphTrainError("--no-pre-rasterize is gone: glyphs are always rasterised once into the cache")
        if self.drop_singletons:
            self.min_label_count = max(self.min_label_count, 2)
        if not self.db and not self.data:
            raise GlyphTrainError("give --db GLYPHS.DB or --data PREPARED_CACHE (or set one in --config)")
        if self.data:  # a prepared cache fixed these when it was made: refuse flags that would do nothing
            fixed = [f"--{f.name.replace('_', '-')}" for f in fields(self)
                     if f.name in CACHE_FIELDS and getattr(self, f.name) != f.default]
            if fixed:
                raise GlyphTrainError(f"{', '.join(fixed)} only apply with --db (the cache given by --data "
                                      f"was prepared with its own); drop them or train from --db")
        if self.overwrite and self.resume:
            raise GlyphTrainError("--overwrite starts a fresh run and --resume continues one: give only one")
        if self.augment_strength < 0 or self.augment_width < 0:
            raise GlyphTrainError("--augment-strength and --augment-width must be >= 0")
        if self.family_balance < 0 or self.label_balance < 0:
            raise GlyphTrainError(f"--family-balance and --label-balance must be >= 0, got {self.family_balance}, "
                                  f"{self.label_balance}")
        if (self.family_balance or self.label_balance) and self.classes_per_batch:
            raise GlyphTrainError("--family-balance/--label-balance and --classes-per-batch each choose the "
                                  "batches: give only one")
        if self.classes_per_batch and self.batch_size % self.classes_per_batch:
            raise GlyphTrainError(
                f"--batch-size {self.batch_size} is not a multiple of --classes-per-batch {self.classes_per_batch}")
        for f in fields(self):  # YAML values skip argparse's choices: check them here too
            choices = f.metadata["flag"].choices
            if choices and getattr(self, f.name) not in choices:
                raise GlyphTrainError(f"{f.name} = {getattr(self, f.name)!r} is not one of {', '.join(choices)}")
        for name in ("epochs", "batch_size", "grad_accum", "img_size", "retrieval_every"):
            if getattr(self, name) < 1:
                raise GlyphTrainError(f"--{name.replace('_', '-')} must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field; parsed values are None when not given, so we can tell what the user
    actually typed from what a --config file says."""
    parser.add_argument("--config", help="YAML file of flag values (keys use underscores); CLI flags override it")
    for flag in flags_of(TrainConfig).values():
        flag.add(parser, unset=True)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values: dict[str, Any] = {}
    if args.config:
        values.update(load_yaml(Path(args.config)))
    values.update({f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None})
    return TrainConfig(**values)


def load_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise GlyphTrainError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise GlyphTrainError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    known = {f.name for f in fields(TrainConfig)}
    values = {k.replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise GlyphTrainError(f"config file {path} has unknown keys {unknown}; see `glyph-train train --help`")
    return values


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(prog="glyph_train.train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def config_json(cfg: TrainConfig) -> str:
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True)
