"""Time label-font's work after the model, side by side with what it replaced, on the same synthetic fonts:
- probabilities: calibrated softmax (evaluation/calibration.py) against scipy's log_softmax, which it used, each
  call on fresh logits as label-font makes them (scipy's time varies from call to call: median and max);
- the joint assignment (inference/label_font.py: _assign_distinct, sparse) against the dense formulation it
  replaced, checking that both choose the same labels;
- the priors' EM (inference/font_prior.py: adapt_to_font, iterating on each glyph's mass per group) against the
  per-label formulation it replaced, on groups like the script prior's (every label in one of 8 scripts) and
  the join prior's (a fifth of the labels in 4 positional forms, the rest kept), checking both give the same
  probabilities.

A synthetic font of N glyphs over C labels: each glyph draws a label (some labels twice, as fonts draw figures
and alternates), and its probabilities are a softmax of noise with that label boosted, so its top 10 holds a few
plausible labels, as the model's do. The baseline is the dense linear_sum_assignment on the (N, 4M + N) cost
matrix of (label, copy) slots plus one unknown slot per glyph, which label-font used until BENCHMARKS.md §14o; it
is skipped above --dense-max glyphs (its matrix grows with N²). Peak memory is what tracemalloc sees (NumPy's
arrays, not SciPy's C++ buffers).

    python bench/bench_label_font_speed.py [--glyphs 300,1000,3000,6700,20000,65000] [--labels 772] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import log_softmax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from glyph_train.evaluation.calibration import calibrated_probabilities  # noqa: E402
from glyph_train.inference.font_prior import KEEP, adapt_to_font  # noqa: E402
from glyph_train.inference.label_font import (CANDIDATES_PER_GLYPH, DUPLICATE_COST, EXTRA_COPIES,  # noqa: E402
                                              _assign_distinct)


def synthetic_logits(glyphs: int, labels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, labels - 1, glyphs)  # the last column plays the other class
    logits = rng.normal(0.0, 1.5, (glyphs, labels))
    logits[np.arange(glyphs), truth] += rng.uniform(2.0, 8.0, glyphs)
    return logits.astype(np.float32)  # as the model gives them


def scipy_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """The replaced softmax."""
    return np.exp(log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1))


def dense_assignment(probs: np.ndarray, other: int | None, duplicate_cost: float) -> np.ndarray:
    """The replaced formulation: every (label, copy) slot and every row's unknown slot as one dense matrix."""
    n, c = probs.shape
    k = min(CANDIDATES_PER_GLYPH, c)
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    columns = np.unique(top)
    if other is not None:
        columns = columns[columns != other]
    m = len(columns)
    copies = 1 if math.isinf(duplicate_cost) else 1 + EXTRA_COPIES
    big = 1e6
    logp = np.log(np.clip(probs, 1e-300, 1.0))
    allowed = np.zeros((n, c), dtype=bool)
    allowed[np.arange(n)[:, None], top] = True
    label_cost = np.where(allowed[:, columns], -logp[:, columns], big)
    slots = [label_cost] + [label_cost + copy * duplicate_cost for copy in range(1, copies)]
    unknown = np.full((n, n), big)
    np.fill_diagonal(unknown, -logp[:, other] if other is not None else big / 2)
    rows, cols = linear_sum_assignment(np.concatenate([*slots, unknown], axis=1))
    out = np.full(n, -1, dtype=np.int64)
    for r, col in zip(rows, cols):
        if col < copies * m and label_cost[r, col % m] < big:
            out[r] = columns[col % m]
    return out


def per_label_adapt(probs: np.ndarray, groups: np.ndarray, iterations: int = 100,
                    tolerance: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """The replaced EM: every iteration reweights and renormalises every label of every glyph. (It returned the
    probabilities of its last shares but one; here, as adapt_to_font does, of its last.)"""
    num_groups = int(groups.max()) + 1
    adapted = groups >= 0
    trained = np.bincount(groups[adapted], minlength=num_groups) / len(groups)
    share = trained.copy()
    onehot = np.zeros((len(groups), num_groups))
    onehot[np.flatnonzero(adapted), groups[adapted]] = 1.0
    weight = np.ones(len(groups))
    out = probs
    for _ in range(iterations):
        weight[adapted] = (share / trained)[groups[adapted]]
        out = probs * weight
        out = out / out.sum(axis=1, keepdims=True)
        mass = (out @ onehot).mean(axis=0)
        new = mass * trained.sum() / mass.sum()
        done = np.abs(new - share).max() < tolerance
        share = np.maximum(new, 1e-12)
        if done:
            break
    weight[adapted] = (share / trained)[groups[adapted]]
    out = probs * weight
    return out / out.sum(axis=1, keepdims=True), share


def prior_groups(labels: int, kind: str) -> np.ndarray:
    """Groups like the script prior's (8 scripts, the other class kept) or the join prior's (4 forms)."""
    if kind == "script":
        groups = np.arange(labels) % 8
    else:
        groups = np.where(np.arange(labels) < labels // 5, np.arange(labels) % 4, KEEP)
    groups[-1] = KEEP  # the other class
    return groups


def measure(fn, args: tuple, repeats: int) -> tuple[float, float, np.ndarray]:
    """(median seconds over `repeats` calls, peak MiB of one more, its result) of fn(*args)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    fn(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return statistics.median(times), peak / 2**20, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--glyphs", default="300,1000,3000,6700,20000,65000")
    ap.add_argument("--labels", type=int, default=772, help="the model's labels (arx_long's 772 + other)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dense-max", type=int, default=6700, help="largest font the dense baseline runs on")
    args = ap.parse_args()
    print(f"load {os.getloadavg()[0]:.1f}; labels {args.labels}; repeats {args.repeats}", flush=True)
    for n in (int(g) for g in args.glyphs.split(",")):
        logits = synthetic_logits(n, args.labels + 1, seed=n)
        other = args.labels
        soft = [measure(calibrated_probabilities, (synthetic_logits(n, args.labels + 1, seed=n + i), 1.3), 1)[0]
                for i in range(1, args.repeats + 1)]
        base = [measure(scipy_probabilities, (synthetic_logits(n, args.labels + 1, seed=n + i), 1.3), 1)[0]
                for i in range(1, args.repeats + 1)]
        probs, base_probs = calibrated_probabilities(logits, 1.3), scipy_probabilities(logits, 1.3)
        row = {"glyphs": n, "softmax_median_s": round(statistics.median(soft), 4), "softmax_max_s": round(max(soft), 4),
               "scipy_softmax_median_s": round(statistics.median(base), 4), "scipy_softmax_max_s": round(max(base), 4),
               "softmax_speedup": round(statistics.median(base) / statistics.median(soft), 1),
               "softmax_max_diff": float(np.abs(probs - base_probs).max())}
        sparse_s, sparse_mb, sparse_out = measure(_assign_distinct, (probs, other, DUPLICATE_COST), args.repeats)
        row.update(assign_s=round(sparse_s, 4), assign_peak_mb=round(sparse_mb, 1))
        for kind in ("script", "join"):
            groups = prior_groups(args.labels + 1, kind)
            fast_s, _, (fast, _) = measure(adapt_to_font, (probs, groups), args.repeats)
            slow_s, _, (slow, _) = measure(per_label_adapt, (probs, groups), max(1, args.repeats // 2))
            row.update({f"{kind}_prior_s": round(fast_s, 4), f"per_label_{kind}_prior_s": round(slow_s, 4),
                        f"{kind}_prior_speedup": round(slow_s / fast_s, 1),
                        f"{kind}_prior_max_diff": float(np.abs(fast - slow).max())})
        if n <= args.dense_max:
            dense_s, dense_mb, dense_out = measure(dense_assignment, (probs, other, DUPLICATE_COST),
                                                   max(1, args.repeats // 2))
            row.update(dense_assign_s=round(dense_s, 4), dense_assign_peak_mb=round(dense_mb, 1),
                       assign_speedup=round(dense_s / sparse_s, 1), same_labels=bool((dense_out == sparse_out).all()))
        print(json.dumps(row), flush=True)
    print(f"load after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
