"""An export ready for inference: how to render for it, and calibrated predictions plus embeddings."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from glyph_train.cache.pipeline import RenderedRows, model_outputs, render_rows
from glyph_train.cache.raster import RenderParams
from glyph_train.errors import GlyphTrainError
from glyph_train.evaluation.calibration import (balance_other, calibrated_probabilities, export_other_balance,
                                                export_temperature)
from glyph_train.flags import Flag
from glyph_train.model.export import WEIGHTS, load_export
from glyph_train.training.augment import AugmentParams, augment_batch

# Test-time augmentation: training's augmentation at half strength. On the held-out fonts, the probabilities
# averaged over the image and 8 such copies label 1.5 and 0.6 points more Latin glyphs right after the joint
# assignment with two exports (Arabic +0.9 and -0.6; strength 0.25 and 1.0 gain less; BENCHMARKS.md §14m).
TTA_AUGMENT = AugmentParams(strength=0.5)
TTA_SEED = 0
# bf16 forward passes: 2.0x as fast on an AMX CPU, 99.1 % of Amiri's glyphs with the same likeliest label, and
# label-font's accuracy on the held-out fonts within 0.2 points (BENCHMARKS.md §14q); where bf16 is emulated
# (CPUs without AMX or AVX512-BF16) it is 3-6x slower (§10b), so it is asked for, not guessed
BF16_FLAG = Flag("--bf16", "run the model's forward passes under bf16 autocast (twice as fast on CPUs with AMX or "
                 "AVX512-BF16 and on recent GPUs, slower where bf16 is emulated)", False)


@dataclass
class Predictions:
    probs: np.ndarray  # (N, C) calibrated probabilities (the other class's balanced: calibration.py)
    embeddings: np.ndarray  # (N, D) L2-normalised float32


class Predictor:
    def __init__(self, export_dir: str | Path, device: str | torch.device = "cpu", batch_size: int = 256,
                 bf16: bool = BF16_FLAG.default) -> None:
        self.export_dir = Path(export_dir)
        # loaded on the CPU, then moved: safetensors refuses device strings like Accelerate's "cpu:0"
        self.model, self.label_names, self.config = load_export(self.export_dir, "cpu")
        self.model.to(device)
        self.device = device
        self.batch_size = batch_size
        self.bf16 = bf16
        self.temperature = export_temperature(self.config)
        self.other, self.other_prior_ratio = export_other_balance(self.config, self.label_names)
        try:
            self.params = RenderParams(img_size=int(self.config["img_size"]), fit=self.config.get("fit", "tight"))
        except ValueError as err:
            raise GlyphTrainError(f"{self.export_dir}: unusable render settings in config.json ({err})") from None
        if self.params.channels != int(self.config["in_chans"]):
            raise GlyphTrainError(f"{self.export_dir}: config.json's fit {self.params.fit!r} makes {self.params.channels} "
                                  f"channel(s) but the model takes {self.config['in_chans']}; re-export the model")

    @property
    def fingerprint(self) -> str:
        """sha256 of the weights, labels and render settings: an index built with another model is refused."""
        h = hashlib.sha256((self.export_dir / WEIGHTS).read_bytes())
        h.update(repr((self.label_names, self.params)).encode())
        return h.hexdigest()

    def render(self, rows) -> RenderedRows:
        """(key, contours, em) rows -> images as the model was trained on (blank outlines kept: a space-like
        glyph still gets a prediction)."""
        return render_rows(rows, self.params, skip_blank=False)

    def predict(self, images: np.ndarray, views: int = 0) -> Predictions:
        """Calibrated probabilities and embeddings of uint8 images. views > 0: the probabilities are averaged
        over the image and that many augmented copies (TTA_AUGMENT, view v of image i drawn from (TTA_SEED, v,
        i): the same images predict the same every run); the embeddings stay the image's own."""
        return _predict_each([self], images, views)[0]

    def adapted(self, images: np.ndarray, columns: np.ndarray, steps: int) -> Predictor:
        """A predictor whose model is this one's fine-tuned for `steps` on uint8 `images` labelled with class
        `columns`, with the export's training augmentation and label smoothing (font_adaptation.py)."""
        from glyph_train.inference.font_adaptation import fine_tuned

        config = self.config
        augment = AugmentParams(enabled=bool(config.get("augment", True)),
                                strength=float(config.get("augment_strength", 1.0)),
                                aspect=float(config.get("augment_width", 0.0)))
        twin = copy.copy(self)
        twin.model = fine_tuned(self.model, images, columns, steps, augment, float(config.get("label_smoothing", 0.0)))
        return twin

    def _outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, embeddings = model_outputs(self.model, images, self.batch_size, self.device, self.bf16)
        if not np.isfinite(logits).all() or not np.isfinite(embeddings).all():
            raise GlyphTrainError(f"{self.export_dir}: the model outputs NaN/inf; use an earlier checkpoint")
        return logits, embeddings

    def _probabilities(self, logits: np.ndarray) -> np.ndarray:
        logits = balance_other(logits, self.other, self.other_prior_ratio, self.temperature)
        return calibrated_probabilities(logits, self.temperature)

    @property
    def embedding_dim(self) -> int:
        return int(self.config["embedding_dim"])


class Ensemble:
    """Exports trained on one label set, predicting as one model: each glyph's calibrated probabilities are
    the mean of the members' (each calibrated with its own temperature), so that where one export is unsure
    or wrong the others outvote it. Its embedding is the members' L2-normalised embeddings concatenated and
    divided by sqrt(members): a unit vector whose inner products are the mean of the members' cosines. The
    members must render alike (one image feeds them all)."""

    def __init__(self, members: Sequence[Predictor]) -> None:
        first = members[0]
        for member in members[1:]:
            if member.label_names != first.label_names:
                raise GlyphTrainError(f"{member.export_dir}: its labels differ from {first.export_dir}'s; the exports "
                                      "of an ensemble must be trained on one label set")
            if member.params != first.params:
                raise GlyphTrainError(f"{member.export_dir}: renders {member.params} but {first.export_dir} "
                                      f"{first.params}; the exports of an ensemble must render alike")
        self.members = list(members)
        self.label_names, self.other, self.params = first.label_names, first.other, first.params

    @property
    def embedding_dim(self) -> int:
        return sum(m.embedding_dim for m in self.members)

    def render(self, rows) -> RenderedRows:
        return self.members[0].render(rows)

    def predict(self, images: np.ndarray, views: int = 0) -> Predictions:
        each = _predict_each(self.members, images, views)
        return Predictions(sum(p.probs for p in each) / len(each),
                           np.concatenate([p.embeddings for p in each], axis=1) / np.float32(np.sqrt(len(each))))

    def adapted(self, images: np.ndarray, columns: np.ndarray, steps: int) -> Ensemble:
        return Ensemble([m.adapted(images, columns, steps) for m in self.members])


def load_predictor(exports: Sequence[str | Path], device: str | torch.device = "cpu", batch_size: int = 256,
                   bf16: bool = BF16_FLAG.default) -> Predictor | Ensemble:
    """One export's Predictor, or the Ensemble of several."""
    members = [Predictor(e, device, batch_size, bf16) for e in exports]
    return members[0] if len(members) == 1 else Ensemble(members)


def _predict_each(predictors: Sequence[Predictor], images: np.ndarray, views: int) -> list[Predictions]:
    """Each predictor's Predictions of the same images, the augmented copies made once for all of them."""
    if not len(images):
        return [Predictions(np.zeros((0, len(p.label_names))), np.zeros((0, p.embedding_dim), np.float32))
                for p in predictors]
    outputs = [p._outputs(images) for p in predictors]
    probs = [p._probabilities(logits) for p, (logits, _) in zip(predictors, outputs)]
    for view in range(1, views + 1):
        copies = _augmented(images, view, predictors[0].batch_size)
        for p, total in zip(predictors, probs):
            total += p._probabilities(p._outputs(copies)[0])
    return [Predictions(total / (views + 1), embeddings) for total, (_, embeddings) in zip(probs, outputs)]


def _augmented(images: np.ndarray, view: int, batch_size: int) -> np.ndarray:
    """A test-time-augmented uint8 copy of (N, S, S) or (N, C, S, S) images, `batch_size` at a time."""
    out = np.empty_like(images)
    for start in range(0, len(images), batch_size):
        chunk = images[start: start + batch_size]
        x = torch.from_numpy(chunk)
        aug = augment_batch(x if x.ndim == 4 else x[:, None], TTA_SEED, view, range(start, start + len(x)), TTA_AUGMENT)
        out[start: start + len(x)] = aug.mul_(255.0).round_().to(torch.uint8).reshape(chunk.shape).numpy()
    return out
