"""Temperature scaling (Guo et al. 2017): one scalar T, fitted on held-out logits, makes softmax(logits / T)
a calibrated probability without changing which class ranks first.

The trainer fits T on the gathered validation logits at every evaluation and stores the last one in the
export's config.json (`temperature`); exports written before this existed load with T = 1.

An export with the other class (--others-per-label) also stores `other_prior_ratio`: how many times as
often training drew that one class as an average label (under --family-balance/--label-balance, by the
sampler's weights). The model's P(other) carries that prior, so real letters of an unfamiliar style lose
to it; inference divides P(other) by the ratio and renormalises (logit adjustment, Menon et al. 2021, for
that class): on unseen families it gave back the closed-set argmax accuracy while keeping the other
class's use (BENCHMARKS.md §14e).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from glyph_train.corpus.db import other_class

LOG_T_BOUNDS = (-4.0, 4.0)  # T in [0.018, 55]: far beyond any model worth calibrating


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `labels` under softmax(logits / temperature)."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising the NLL of the known labels (those in [0, num_classes)); 1.0 when there is
    nothing to fit on (no known label)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    known = (labels >= 0) & (labels < logits.shape[1]) if logits.ndim == 2 else np.zeros(0, bool)
    if not known.any() or not np.isfinite(logits).all():
        return 1.0
    lg, lb = logits[known], labels[known]
    res = minimize_scalar(lambda log_t: nll(lg, lb, math.exp(log_t)), bounds=LOG_T_BOUNDS, method="bounded",
                          options={"xatol": 1e-4})
    return float(math.exp(res.x))


def calibrated_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) as float64 rows summing to 1. In place on one copy: scipy's log_softmax took 1.5 s
    for a 6,700-glyph font's 773 classes, this 0.03 s (bench/bench_label_font_speed.py, BENCHMARKS.md §14o)."""
    z = np.array(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def balance_other(logits: np.ndarray, other: int | None, ratio: float | None, temperature: float) -> np.ndarray:
    """`logits` with the other class's lowered by T·log(ratio): softmax(result / T) is softmax(logits / T)
    with P(other) divided by `ratio`, renormalised. Unchanged (the same array) without an other class."""
    if other is None or not ratio:
        return logits
    out = np.array(logits, dtype=np.float64)
    out[:, other] -= temperature * math.log(ratio)
    return out


def export_other_balance(config: dict, label_names: list[str]) -> tuple[int | None, float | None]:
    """(other class index, its prior ratio) of an export; (None, None) for exports without one."""
    value = config.get("other_prior_ratio")
    ratio = float(value) if isinstance(value, (int, float)) and math.isfinite(value) and value > 0 else None
    return other_class(label_names), ratio


def export_temperature(config: dict) -> float:
    """The export's fitted T; 1.0 for exports that predate calibration (or hold no usable value)."""
    value = config.get("temperature")
    try:
        t = float(value)
    except (TypeError, ValueError):
        return 1.0
    return t if math.isfinite(t) and t > 0 else 1.0
