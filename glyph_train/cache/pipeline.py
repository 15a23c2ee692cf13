"""The one path from outline to model input, shared by prepare, show, evaluate, training and inference.

    contours JSON + EmBox --render_rows--> uint8 (N, S, S), ink 255 on 0 --to_model_input--> float (N, 1, S, S) in [0, 1]

A multi-fit render (`--fit tight+em`) has a channel axis from the start: uint8 (N, C, S, S) -> float (N, C, S, S).

Training reads the uint8 images prepare cached; evaluation and inference render the same way on the fly.
Both ends live here so the model can never see differently made images at training and at inference time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Iterable

import numpy as np
import torch

from glyph_train.cache.raster import RenderParams, render
from glyph_train.corpus.font_rows import EmBox
from glyph_train.errors import GlyphTrainError
from glyph_train.flags import Flag


@dataclass
class RenderReport:
    """What did not become an image: outlines the renderer refused and outlines that drew nothing. Never
    silent, and fatal once most of a selection fails (`check`): a DB in a format we misread must stop the
    command, not yield a cache of a few survivors."""

    failed: int = 0
    blank: int = 0
    first_error: str | None = None  # the first refused outline's reason, prefixed by its key

    def add_failure(self, key: Hashable, reason: str, key_name: str = "") -> None:
        self.failed += 1
        if self.first_error is None:
            self.first_error = f"{key_name} {key}: {reason}" if key_name else f"{key}: {reason}"

    def merge(self, other: "RenderReport") -> None:
        self.failed += other.failed
        self.blank += other.blank
        self.first_error = self.first_error or other.first_error

    def check(self, source: Path | str, selected: int) -> None:
        """Raise once more than half of the `selected` rows of `source` failed to render."""
        if self.failed * 2 > selected:
            raise GlyphTrainError(f"{source}: {self.failed_line()}: more than half of the {selected:,} selected "
                                  f"rows; is the contours column in glyph-train's format (README: Contours)?")

    def summary(self) -> str:
        """'' when nothing was lost, else e.g. '3 outline(s) could not be rendered (first: glyph_id 7: ...), 1 blank'."""
        return ", ".join(([self.failed_line()] if self.failed else []) + ([f"{self.blank:,} blank"] if self.blank else []))

    def failed_line(self) -> str:
        return f"{self.failed:,} outline(s) could not be rendered (first: {self.first_error})"


@dataclass
class RenderedRows:
    images: np.ndarray  # (k, *params.image_shape) uint8
    keys: list  # the key of each image, in input order
    report: RenderReport


def render_rows(rows: Iterable[tuple[Any, str | bytes | list, EmBox | None]], params: RenderParams,
                skip_blank: bool = True, key_name: str = "") -> RenderedRows:
    """Render (key, contours, em box) rows; unrenderable (and, with skip_blank, blank) rows are counted and
    left out, never raised. `keys` says which rows the images are (a glyph id, a glyph name, ...); the
    report's first error names its row as "{key_name} {key}"."""
    images: list[np.ndarray] = []
    keys: list = []
    report = RenderReport()
    for key, contours, em in rows:
        try:
            img = render(contours, params, em)
        except ValueError as err:
            report.add_failure(key, str(err), key_name)
            continue
        if skip_blank and not img.any():
            report.blank += 1  # e.g. a lone point: nothing for the model to see
            continue
        images.append(img)
        keys.append(key)
    block = np.stack(images) if images else np.zeros((0, *params.image_shape), dtype=np.uint8)
    return RenderedRows(block, keys, report)


def to_model_input(images: np.ndarray | torch.Tensor, channels: int = 1) -> torch.Tensor:
    """uint8 images -> float32 (..., C, S, S) in [0, 1]. With one channel the input has none: one (S, S)
    image gives (1, S, S), a batch (N, S, S) gives (N, 1, S, S); with C > 1 it is (..., C, S, S) already.
    Always a new tensor (the input may be a read-only Arrow view)."""
    if images.dtype not in (np.uint8, torch.uint8):
        raise TypeError(f"to_model_input takes uint8 images (0-255), got {images.dtype}")
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images))
    if channels == 1:
        x = x.unsqueeze(-3)
    elif x.ndim < 3 or x.shape[-3] != channels:
        raise ValueError(f"expected {channels}-channel images (..., {channels}, S, S), got shape {tuple(x.shape)}")
    return x.to(torch.float32).div_(255.0)


def image_channels(images: np.ndarray) -> int:
    """Channels of a batch of uint8 images: (N, S, S) has 1, (N, C, S, S) has C."""
    return 1 if images.ndim == 3 else int(images.shape[1])


FORWARD_BATCH_FLAG = Flag("--batch-size", "images per forward pass", 256, type=int)


@torch.no_grad()
def model_outputs(model: torch.nn.Module, images: np.ndarray, batch_size: int = 256,
                  device: torch.device | str | None = None, bf16: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(logits, embeddings) as float32 numpy of uint8 (N, S, S) or (N, C, S, S) images, `batch_size` at a time,
    model in eval mode; `bf16`: the forward passes under bf16 autocast."""
    model.eval()
    device = torch.device(device or next(model.parameters()).device)
    channels = image_channels(images)
    logits, embeddings = [], []
    for start in range(0, len(images), batch_size):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(to_model_input(images[start: start + batch_size], channels).to(device))
        logits.append(out["logits"].float().cpu().numpy())
        embeddings.append(out["embedding"].float().cpu().numpy())
    if not logits:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(logits), np.concatenate(embeddings)
