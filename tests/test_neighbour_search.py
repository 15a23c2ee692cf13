"""The bf16-candidate + exact fp32 re-rank neighbour search against FAISS (the exact reference) and fp64."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from glyph_train.evaluation import metrics
from glyph_train.evaluation.metrics import nearest_neighbours, normalise, retrieval_metrics, search_method


def embeddings_like_a_trained_model(n: int = 3000, dim: int = 64, labels: int = 120, seed: int = 0):
    """Tight label clusters with font-like sub-clusters, near-duplicates (1e-4 apart, inside bf16 rounding)
    and same-label exact duplicates: what validation embeddings of many fonts look like."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(labels, dim))
    styles = rng.normal(size=(8, dim))
    label = rng.integers(0, labels, size=n)
    style = rng.integers(0, 8, size=n)
    x = centres[label] + 0.8 * styles[style] + 0.9 * rng.normal(size=(n, dim))
    near = rng.choice(n, size=n // 10, replace=False)
    x[near[: len(near) // 2]] = x[near[len(near) // 2 :]] + 1e-4 * rng.normal(size=(len(near) // 2, dim))
    label[near[: len(near) // 2]] = label[near[len(near) // 2 :]]
    dup = rng.choice(n, size=40, replace=False)
    x = np.concatenate([x, x[dup]])
    label = np.concatenate([label, label[dup]])
    return normalise(x.astype(np.float32)), label


def reference_topk(x: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """fp64 brute force, own index removed, best first, higher index first among exact ties."""
    sims = x[queries].astype(np.float64) @ x.T.astype(np.float64)
    sims[np.arange(len(queries)), queries] = -np.inf
    order = np.argsort(-sims[:, ::-1], axis=1, kind="stable")[:, :k]
    return x.shape[0] - 1 - order


def test_bf16_rerank_equals_faiss_on_embeddings_like_a_trained_model():
    x, labels = embeddings_like_a_trained_model()
    queries = np.arange(len(x))
    f_scores, f_idx = nearest_neighbours(x, queries, k=11, method="faiss")
    b_scores, b_idx = nearest_neighbours(x, queries, k=10, method="bf16")
    assert np.abs(f_scores[:, :10] - b_scores).max() < 1e-5
    # Identical lists wherever the order is defined: no two of a query's 11 best within fp32 rounding (exact
    # duplicates and near-duplicates leave the order within their tie to each kernel).
    untied = (-np.diff(f_scores, axis=1) > 1e-5).all(axis=1)
    assert untied.mean() > 0.4
    assert (f_idx[untied, :10] == b_idx[untied]).all()
    # Elsewhere the same items up to ties: equal sorted scores.
    assert np.abs(np.sort(f_scores[:, :10], axis=1) - np.sort(b_scores, axis=1)).max() < 1e-5
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metrics, "SEARCH_METHOD", "faiss")
        faiss_metrics = retrieval_metrics(x, labels, k=10)
        mp.setattr(metrics, "SEARCH_METHOD", "bf16")
        bf16_metrics = retrieval_metrics(x, labels, k=10)
    assert json.dumps(faiss_metrics) == json.dumps(bf16_metrics)
    assert 0.2 < faiss_metrics["map_at_r"] < 0.99  # not degenerate


@pytest.mark.parametrize("margin", [0, 32])  # 0: almost every query falls back to the full fp32 ranking
def test_near_ties_inside_bf16_rounding_are_ranked_exactly(monkeypatch, margin):
    # 300 items whose cosines with the query step by 1e-4: bf16 (8 bits) sees them all as equal, so the bf16
    # top list alone cannot tell which are the best; the bound must send the query to the exact ranking.
    monkeypatch.setattr(metrics, "_RERANK_MARGIN", margin)
    rng = np.random.default_rng(1)
    dim = 8
    cos = 0.5 + 1e-4 * rng.permutation(300)
    around = normalise(rng.normal(size=(300, dim - 1)))  # directions off the query's axis: the 300 spread out
    ring = np.concatenate([cos[:, None], np.sqrt(1 - cos[:, None] ** 2) * around], axis=1)
    far = rng.normal(size=(200, dim)) * np.r_[0.05, np.ones(dim - 1)]
    x = normalise(np.concatenate([np.eye(1, dim), ring, far]).astype(np.float32))
    queries = np.arange(len(x))
    _, idx = nearest_neighbours(x, queries, k=10, method="bf16")
    assert (idx[0] == np.argsort(-cos)[:10] + 1).all()
    ref = reference_topk(x, queries, 11)
    sims = np.take_along_axis(x.astype(np.float64) @ x.T.astype(np.float64), ref, axis=1)
    untied = (-np.diff(sims, axis=1) > 1e-6).all(axis=1)
    assert untied.mean() > 0.9
    assert (idx[untied] == ref[untied, :10]).all()
    _, f_idx = nearest_neighbours(x, queries, k=10, method="faiss")
    assert (idx[0] == f_idx[0]).all()


def test_exact_ties_keep_the_higher_index_first_and_never_the_query():
    x = normalise(np.ones((15, 4), np.float32))
    _, idx = nearest_neighbours(x, np.arange(15), k=3, method="bf16")
    assert (idx == reference_topk(x, np.arange(15), 3)).all()
    assert (idx != np.arange(15)[:, None]).all()


def test_bf16_error_bound_holds_for_this_machines_kernel():
    rng = np.random.default_rng(2)
    for dim in (16, 128, 512):
        x = torch.from_numpy(normalise(rng.normal(size=(512, dim)).astype(np.float32)))
        x[256:] = torch.from_numpy(normalise(np.abs(rng.normal(size=(256, dim))).astype(np.float32)))  # large cosines
        xb = x.to(torch.bfloat16)
        approx = (xb @ xb.T).double()
        exact = x.double() @ x.double().T
        assert (approx - exact).abs().max().item() <= metrics._BF16_SCORE_ERROR


def test_auto_uses_bf16_only_where_the_hardware_has_it(monkeypatch):
    monkeypatch.setattr(metrics, "native_bf16_matmul", lambda: False)
    assert search_method("auto") == "faiss"
    monkeypatch.setattr(metrics, "native_bf16_matmul", lambda: True)
    assert search_method("auto") == "bf16"
    assert search_method("faiss") == "faiss"
    with pytest.raises(ValueError):
        search_method("int8")
