"""Domain-safe glyph augmentation whose randomness is a pure function of (seed, epoch, sample index).

Glyph identity survives small affine jitter, stroke-weight and contrast changes, but not flips (a mirrored
glyph is another letter, or none), so there are none. Every random draw for a sample comes from a NumPy
SeedSequence of the triple: the same sample in the same epoch is augmented identically whichever process,
DataLoader worker or batch computes it, and differently in every epoch (the old system seeded from a
per-worker call counter, so augmentations depended on the worker layout).

Images are single-channel with ink bright on a black background (raster.render's convention), so the
zero padding of the warp is background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentParams:
    enabled: bool = True
    strength: float = 1.0  # multiplies every range below: 0 gives the identity, 0.5 halves all jitter
    p: float = 1.0  # probability that a sample is augmented at all; the rest pass through unchanged
    translate: float = 0.06  # max shift per axis, as a fraction of the image side
    scale: float = 0.12  # zoom factor log-uniform in [1/(1+scale), 1+scale]
    rotate_deg: float = 8.0  # max rotation, either direction
    shear_deg: float = 8.0  # max horizontal shear (slant), either direction
    stroke: float = 0.6  # stroke weight: blend toward a 3×3 dilation (bolder) or erosion (thinner), |t| ≤ stroke
    gamma: float = 0.35  # tone curve of the anti-aliased edges: log(1 + k) uniform in ±gamma (see _apply)
    contrast: float = 0.3  # ink intensity scaled by a factor in [1 - contrast, 1]
    aspect: float = 0.0  # width (condensed/extended): x scaled by w and y by 1/w, w log-uniform in [1/(1+a), 1+a]


_CHUNK = 16  # samples per pass: keeps a pass's tensors (~1 MB at 128 px) in cache; results don't depend on it


def _coefficients(seed: int, epoch: int, index: int, params: AugmentParams) -> list[float]:
    """One sample's transform: [tx, ty, inverse warp a, b, c, d, stroke t, tone k, ink level].

    The draws are a hash of (seed, epoch, index) (SeedSequence), and the arithmetic is scalar Python, so the
    result cannot depend on which other samples share the batch.
    """
    # the 10th draw (width) was added later; SeedSequence streams are prefix-stable, so the first 9 are unchanged
    u = np.random.SeedSequence([seed, epoch, index]).generate_state(10, np.uint64) / 2.0**64
    on = params.strength if u[0] < params.p else 0.0
    tx, ty, log_zoom, rot, shear, stroke, tone, contrast, log_width = ((2.0 * v - 1.0) * on for v in u[1:])
    zoom = math.exp(log_zoom * math.log1p(params.scale))
    width = math.exp(log_width * math.log1p(params.aspect))
    rot *= math.radians(params.rotate_deg)
    shear = math.tan(shear * math.radians(params.shear_deg))
    # content moves by A = zoom · rotation · shear · diag(width, 1/width), then by (tx, ty); the grid samples
    # at A⁻¹(p - t)
    c, s = math.cos(rot), math.sin(rot)
    a00, a01, a10, a11 = zoom * c * width, zoom * (c * shear - s) / width, zoom * s * width, zoom * (s * shear + c) / width
    det = a00 * a11 - a01 * a10
    shift = 2.0 * params.translate  # normalised coordinates span 2
    return [tx * shift, ty * shift, a11 / det, -a01 / det, -a10 / det, a00 / det,
            stroke * params.stroke, math.expm1(tone * params.gamma), 1.0 - abs(contrast) * params.contrast]


def _to_float(imgs: torch.Tensor) -> torch.Tensor:
    return imgs.float().div_(255.0) if imgs.dtype == torch.uint8 else imgs.float().clamp(0.0, 1.0)


def _extreme3x3(x: torch.Tensor, op, outside: float) -> torch.Tensor:
    """3×3 max (dilation) or min (erosion) as two separable passes of shifted views: several times faster
    on CPU than max_pool2d with stride 1."""
    p = F.pad(x, (1, 1, 1, 1), value=outside)
    rows = op(op(p[..., :, :-2], p[..., :, 1:-1]), p[..., :, 2:])
    return op(op(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


def _stroke(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Blend each sample toward its dilation (t > 0, bolder) or erosion (t < 0, thinner) by |t|; fractional
    weights move anti-aliased edges by sub-pixel amounts. Only the samples that need each operation pay for it."""
    for sign, op, outside in ((1.0, torch.maximum, 0.0), (-1.0, torch.minimum, 1.0)):  # outside never erodes
        idx = torch.nonzero(t.flatten() * sign > 0).flatten()
        if len(idx) == len(x):
            x = x + t.abs() * (_extreme3x3(x, op, outside) - x)
        elif len(idx):
            part = x.index_select(0, idx)
            x = x.index_copy(0, idx, part + t[idx].abs() * (_extreme3x3(part, op, outside) - part))
    return x


def _apply(x: torch.Tensor, coef: torch.Tensor, out: torch.Tensor) -> None:
    """Augment float images (B, C, H, W) into `out` with per-sample coefficients (B, 9) from `_coefficients`."""
    b, _, h, w = x.shape
    tx, ty, i00, i01, i10, i11, stroke, k, ink = coef.T.reshape(9, b, 1, 1, 1).unbind(0)
    x = _stroke(x, stroke)  # in the glyph's own pixels, before the warp
    xs = (torch.arange(w, dtype=torch.float32, device=x.device) * 2 + 1) / w - 1  # pixel centres (align_corners=False)
    ys = (torch.arange(h, dtype=torch.float32, device=x.device) * 2 + 1) / h - 1
    dx = xs.view(1, 1, w) - tx[..., 0]  # (B, 1, W)
    dy = ys.view(1, h, 1) - ty[..., 0]  # (B, H, 1)
    grid = x.new_empty(b, h, w, 2)  # built elementwise, written in place: no batched matmul, no stack
    torch.add(i00[..., 0] * dx, i01[..., 0] * dy, out=grid[..., 0])
    torch.add(i10[..., 0] * dx, i11[..., 0] * dy, out=grid[..., 1])
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # A gamma-like tone curve on the anti-aliased edges (Schlick's bias x / (k(1 - x) + 1); k = 0 is the
    # identity), then the ink level; both keep [0, 1]. Not x ** gamma: pow and log take a slow path on the
    # zeros that make up most of a glyph image, and cost more than the warp.
    torch.div(x * ink, (1.0 - x) * k + 1.0, out=out)


def augment_batch(imgs: torch.Tensor, seed: int, epoch: int, indices: Sequence[int],
                  params: AugmentParams = AugmentParams()) -> torch.Tensor:
    """Augment (B, C, H, W) uint8 (0-255) or float (0-1) images; sample b uses (seed, epoch, indices[b]).

    Returns float32 (B, C, H, W) in [0, 1]. Each sample's result is bit-identical to `augment` on that sample
    alone, in any batch: every tensor operation is per-sample arithmetic. Runs on the images' device (CPU
    in DataLoader workers, or the GPU for a whole batch); results are reproducible per device type.
    """
    if len(indices) != len(imgs):
        raise ValueError(f"{len(imgs)} images but {len(indices)} indices")
    if not params.enabled:
        return _to_float(imgs)
    coef = [_coefficients(seed, epoch, int(i), params) for i in indices]
    coef = torch.tensor(coef, dtype=torch.float32, device=imgs.device)
    out = torch.empty(imgs.shape, dtype=torch.float32, device=imgs.device)
    for i in range(0, len(imgs), _CHUNK):
        _apply(_to_float(imgs[i : i + _CHUNK]), coef[i : i + _CHUNK], out[i : i + _CHUNK])
    return out


def augment(img: torch.Tensor, seed: int, epoch: int, index: int,
            params: AugmentParams = AugmentParams()) -> torch.Tensor:
    """Augment one (C, H, W) or (H, W) image, uint8 (0-255) or float (0-1) -> float32 (C, H, W) in [0, 1]
    (C = 1 for an (H, W) image). Every channel moves with the same transform."""
    x = img.reshape(1, -1, *img.shape[-2:])
    return augment_batch(x, seed, epoch, [index], params)[0]
