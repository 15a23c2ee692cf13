"""Training-time data: the prepared cache as torch Datasets, epoch-seeded augmentation, and the loaders.

Images are read through a zero-copy view of the cache's Arrow memory map, so a DataLoader worker costs
no copy of the dataset (workers are forked) and a random read is a numpy index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from torch.utils.data import DataLoader, Dataset

from glyph_train.cache.pipeline import image_channels, to_model_input
from glyph_train.cache.prepare import prepare
from glyph_train.cache.raster import RenderParams
from glyph_train.cache.reader import column_array, images_view, load_prepared
from glyph_train.corpus.db import filter_from_args, other_class
from glyph_train.errors import GlyphTrainError
from glyph_train.outputs import default_cache_dir
from glyph_train.training.augment import AugmentParams, augment
from glyph_train.training.config import TrainConfig
from glyph_train.training.samplers import BalancedSampler, ClassBalancedBatchSampler

EpochSampler = ClassBalancedBatchSampler | BalancedSampler


class GlyphImages(Dataset):
    """One split of the cache. Items: image (1,S,S) float in [0,1], label, contrastive group, and the key
    the sampler asked for as "index": the row, or row + k·len for a weighted sampler's k-th repeat of it
    (BalancedSampler), which seeds its own augmentation."""

    def __init__(self, split, groups: np.ndarray, seed: int, augment_params: AugmentParams | None) -> None:
        self.images = images_view(split)
        self.channels = image_channels(self.images)
        self.labels = column_array(split, "label").astype(np.int64)
        self.groups = groups
        self.seed = seed
        self.augment_params = augment_params
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # by train.epoch_batches before each epoch (seeds augmentation)
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int) -> dict[str, torch.Tensor | int]:
        i = key % len(self.labels)
        if self.augment_params is not None:
            img = torch.from_numpy(np.array(self.images[i]))  # copy: the Arrow buffer is read-only
            x = augment(img, self.seed, self.epoch, key, self.augment_params)
        else:
            x = to_model_input(self.images[i], self.channels)
        return {"image": x, "label": int(self.labels[i]), "group": int(self.groups[i]), "index": key}


@dataclass
class TrainingData:
    train: GlyphImages
    validation: GlyphImages
    val_char_classes: np.ndarray
    label_names: list[str]
    cache_dir: Path
    render: dict  # the cache's render parameters (img_size, fit, ...)
    val_fonts: np.ndarray | None = None  # font id per validation row (for top1_equiv)
    train_families: np.ndarray | None = None  # family and font id per training row (family balance)
    train_fonts: np.ndarray | None = None


def contrastive_groups(split, mode: str, vocabulary: dict[str, int], other: int | None = None) -> np.ndarray:
    """SupCon positives: same label, or hybrid = same joining_group (Arabic) else same `cc_<char_class>`.
    Rows of the `other` class (--others-per-label) get -1: none is a positive of another (they are many
    characters), so SupCon uses them as negatives only."""
    labels = column_array(split, "label").astype(np.int64)
    if mode == "label":
        groups = labels.copy()
    else:
        names = [jg if jg and jg != "NO_JOIN" else f"cc_{cc}"
                 for jg, cc in zip(column_array(split, "joining_group"), column_array(split, "char_class"))]
        groups = np.array([vocabulary.setdefault(n, len(vocabulary)) for n in names], dtype=np.int64)
    if other is not None:
        groups[labels == other] = -1
    return groups


def load_training_data(cfg: TrainConfig, accelerator: Accelerator) -> TrainingData:
    """Render the DB once into its cache (one per fingerprint under --cache-dir, so runs with other
    settings keep theirs) on the main process, then open it on every process."""
    if cfg.data:
        cache = Path(cfg.data)
    else:
        found = [None]
        with accelerator.main_process_first():
            if accelerator.is_main_process:
                found[0] = str(prepare(Path(cfg.db), cache_root(cfg),
                                       RenderParams(img_size=cfg.img_size, fit=cfg.fit), cfg.split, cfg.val_frac,
                                       cfg.seed, cfg.num_proc, filter_from_args(cfg), per_fingerprint=True).path)
        cache = Path(broadcast_object_list(found)[0])  # its path names the fingerprint only rank 0 computed
    return open_training_data(cfg, cache)


def open_training_data(cfg: TrainConfig, cache: Path) -> TrainingData:
    """The prepared cache's splits as Datasets (no Accelerator needed)."""
    prepared = load_prepared(cache)
    vocabulary: dict[str, int] = {}
    other = other_class(prepared.label_names)
    aug = AugmentParams(strength=cfg.augment_strength, aspect=cfg.augment_width) if cfg.augment else None
    train = GlyphImages(prepared.train, contrastive_groups(prepared.train, cfg.contrastive_grouping, vocabulary, other),
                        cfg.seed, aug)
    val = GlyphImages(prepared.validation,
                      contrastive_groups(prepared.validation, cfg.contrastive_grouping, vocabulary, other), cfg.seed,
                      None)
    return TrainingData(train, val, column_array(prepared.validation, "char_class").astype(object),
                        prepared.label_names, cache, prepared.info["params"],
                        column_array(prepared.validation, "font").astype(object),
                        column_array(prepared.train, "family").astype(object),
                        column_array(prepared.train, "font").astype(object))


def cache_root(cfg: TrainConfig) -> Path:
    """--cache-dir, else prepared/ in the user's glyph-train cache folder."""
    return Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir() / "prepared"


def check_one_global_batch(batch_size: int, rows: int, num_processes: int) -> None:
    """Refuse a run that would take 0 optimizer steps (drop_last) and export an untrained model."""
    if rows < batch_size * num_processes:
        raise GlyphTrainError(
            f"the training split has {rows:,} rows, fewer than one global batch of {batch_size * num_processes:,} "
            f"(--batch-size {batch_size} x {num_processes} process(es)): training would take 0 steps; "
            f"lower --batch-size or train on more glyphs")


def make_loaders(cfg: TrainConfig, data: TrainingData) -> tuple[DataLoader, DataLoader, EpochSampler | None]:
    """Unsharded loaders: `accelerate.prepare` shards them across processes (disjoint batches per rank).
    The third value is the training sampler the trainer must `set_epoch` itself (None: Accelerate's own)."""
    common = dict(num_workers=cfg.num_workers, pin_memory=torch.cuda.is_available(),
                  persistent_workers=False)  # fresh workers each epoch see the dataset's new epoch
    sampler: EpochSampler | None = None
    if cfg.classes_per_batch:
        sampler = ClassBalancedBatchSampler(data.train.groups, cfg.classes_per_batch,
                                            cfg.batch_size // cfg.classes_per_batch, seed=cfg.seed)
        train = DataLoader(data.train, batch_sampler=sampler, **common)
    elif cfg.family_balance or cfg.label_balance:
        sampler = BalancedSampler(data.train_families, data.train_fonts, cfg.family_balance, seed=cfg.seed,
                                  labels=data.train.labels, beta=cfg.label_balance)
        train = DataLoader(data.train, batch_size=cfg.batch_size, sampler=sampler, drop_last=True, **common)
    else:
        train = DataLoader(data.train, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                           generator=torch.Generator().manual_seed(cfg.seed), **common)
    val_index = validation_subset(len(data.validation), cfg.retrieval_cap, cfg.seed)
    val = DataLoader(torch.utils.data.Subset(data.validation, val_index), batch_size=cfg.batch_size * 2,
                     shuffle=False, **common)
    return train, val, sampler


def other_class_prior(data: TrainingData, sampler: EpochSampler | None) -> tuple[int | None, float | None]:
    """The --others-per-label class (None without one) and how many times as often training draws it as an
    average label (the export's `other_prior_ratio`: evaluation/calibration.py), by the sampler's draw
    weights where it has them (BalancedSampler), else by row counts."""
    other = other_class(data.label_names)
    if other is None:
        return None, None
    weights = sampler.p if isinstance(sampler, BalancedSampler) else None
    drawn = np.bincount(data.train.labels, weights=weights, minlength=len(data.label_names))
    rest = (drawn.sum() - drawn[other]) / max(len(data.label_names) - 1, 1)
    return other, float(drawn[other] / rest) if rest > 0 and drawn[other] > 0 else None


def validation_subset(n: int, cap: int, seed: int) -> list[int]:
    """All of validation, or a fixed seeded sample of `cap` rows (sorted, so loaders stay sequential)."""
    if not cap or cap >= n:
        return list(range(n))
    return sorted(np.random.default_rng(seed).choice(n, size=cap, replace=False).tolist())
