"""Retrieval's exact neighbour search: the AMX kernel and FAISS against fp64 brute force, and the canonical
order both are settled into (exact score, then the higher index first)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from glyph_train.errors import GlyphTrainError
from glyph_train.evaluation import amx_search, metrics
from glyph_train.evaluation.metrics import normalise, retrieval_metrics, search_method

needs_amx = pytest.mark.skipif(not amx_search.available()[0], reason=f"no AMX search here: {amx_search.available()[1]}")


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


def one_ulp_apart(n: int = 600, dim: int = 32, seed: int = 0):
    """Pairs of vectors one fp32 ulp apart in one coordinate, with different labels: their scores against any
    query differ by ~1e-8, below fp32's resolution, so an fp32 search mostly ties them and puts the higher
    index (the lower one of the pair, placed second) first, while the exact scores rank the other first."""
    rng = np.random.default_rng(seed)
    label = np.arange(n // 2) % 40
    base = normalise(np.abs(rng.normal(size=(40, dim))[label] + 0.3 * rng.normal(size=(n // 2, dim))).astype(np.float32))
    twin = base.copy()
    col = rng.integers(0, dim, size=len(base))
    twin[np.arange(len(base)), col] = np.nextafter(base[np.arange(len(base)), col], np.float32(2))
    x = np.concatenate([twin, base])
    labels = np.concatenate([40 + label, label])
    return x, labels


def reference_topk(x: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """fp64 brute force, own index removed, best first, higher index first among exact ties."""
    sims = x[queries].astype(np.float64) @ x.T.astype(np.float64)
    sims[np.arange(len(queries)), queries] = -np.inf
    order = x.shape[0] - 1 - np.argsort(-sims[:, ::-1], axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


def reference_metrics(x: np.ndarray, labels: np.ndarray, k: int) -> dict:
    """retrieval_metrics from fp64 brute-force lists in the canonical order (for data without -1 labels)."""
    x = normalise(x)  # as retrieval_metrics does
    cutoffs = sorted({c for c in (1, 5, k) if c <= k})
    values = {name: np.zeros(len(labels)) for name in (f"hit_at_{c}" for c in cutoffs)}
    values.update(precision_at_1=np.zeros(len(labels)), map_at_r=np.zeros(len(labels)))
    r = np.bincount(labels)[labels] - 1
    queries = np.flatnonzero(r > 0)
    _, nbr = reference_topk(x, queries, len(x) - 1)
    metrics._score_queries(values, queries, nbr, labels, r, cutoffs)
    out = {name: float(v[queries].mean()) for name, v in values.items()}
    return out | {"num_queries": len(queries), "num_without_positive": int(len(labels) - len(queries))}


def amx_lists(x: np.ndarray, queries: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.full((len(queries), int(depth.max())), -np.inf, np.float32)
    index = np.full(scores.shape, -1, np.int64)
    for rows, s, i in amx_search.leave_one_out_topd(x, queries, depth):
        scores[rows], index[rows] = s, i
    return scores, index


@needs_amx
def test_amx_lists_are_each_querys_exact_top_depth():
    x, _ = embeddings_like_a_trained_model()
    queries = np.arange(0, len(x), 3)
    depth = np.random.default_rng(1).integers(1, 60, size=len(queries))
    scores, idx = amx_lists(x, queries, depth)
    ref_scores, ref_idx = reference_topk(x, queries, int(depth.max()) + 1)
    for i, d in enumerate(depth.tolist()):
        assert (idx[i, d:] == -1).all() and np.isneginf(scores[i, d:]).all()
        assert np.abs(scores[i, :d] - ref_scores[i, :d]).max() < 1e-5
        # The same items wherever fp32 rounding cannot decide: no score within 1e-5 of the cut.
        if ref_scores[i, d - 1] - ref_scores[i, d] > 1e-5:
            assert set(idx[i, :d].tolist()) == set(ref_idx[i, :d].tolist())
        untied = (-np.diff(ref_scores[i, : d + 1]) > 1e-5).all()
        if untied:
            assert (idx[i, :d] == ref_idx[i, :d]).all()
    assert (idx != queries[:, None]).all()


@needs_amx
def test_near_ties_inside_bf16_rounding_are_all_found():
    # 300 items whose cosines with the query step by 1e-4: bf16 (8 bits) sees them all as equal, so only the
    # proven error bound keeps every one that can make the list.
    rng = np.random.default_rng(1)
    dim = 8
    cos = 0.5 + 1e-4 * rng.permutation(300)
    around = normalise(rng.normal(size=(300, dim - 1)))
    ring = np.concatenate([cos[:, None], np.sqrt(1 - cos[:, None] ** 2) * around], axis=1)
    far = rng.normal(size=(200, dim)) * np.r_[0.05, np.ones(dim - 1)]
    x = normalise(np.concatenate([np.eye(1, dim), ring, far]).astype(np.float32))
    _, idx = amx_lists(x, np.array([0]), np.array([10]))
    assert (idx[0] == np.argsort(-cos)[:10] + 1).all()


@needs_amx
def test_exact_ties_keep_the_higher_index_first_and_never_the_query():
    x = normalise(np.ones((70, 4), np.float32))  # 70 identical vectors: every score ties
    queries = np.arange(70)
    _, idx = amx_lists(x, queries, np.full(70, 5))
    assert (idx == reference_topk(x, queries, 5)[1]).all()
    labels = np.arange(70) % 2
    assert json.dumps(retrieval_metrics(x, labels, k=3)) == json.dumps(reference_metrics(x, labels, 3))


def test_the_error_bound_holds_for_bf16_products_with_fp32_sums():
    rng = np.random.default_rng(2)
    for dim in (16, 128, 512):
        x = torch.from_numpy(normalise(rng.normal(size=(512, dim)).astype(np.float32)))
        x[256:] = torch.from_numpy(normalise(np.abs(rng.normal(size=(256, dim))).astype(np.float32)))  # large cosines
        h = x.to(torch.bfloat16)
        approx = h.double() @ h.double().T  # AMX: exact bf16 products, fp32 sums (within the slack)
        exact = x.double() @ x.double().T
        bound = torch.from_numpy(amx_search._error_bounds(x, h, torch.arange(len(x)))).double()
        assert ((approx - exact).abs() <= bound[:, None]).all()
        assert bound.max() < 2 * 2.0**-8  # tighter than the worst case 2u it replaces


@pytest.mark.parametrize("method", ["faiss", pytest.param("amx", marks=needs_amx)])
@pytest.mark.parametrize("budget", [metrics._SEARCH_BUDGET, 200])  # 200: FAISS in batches of a few queries
def test_metrics_follow_exact_scores_where_fp32_cannot_tell(monkeypatch, method, budget):
    monkeypatch.setattr(metrics, "SEARCH_METHOD", method)
    monkeypatch.setattr(metrics, "_SEARCH_BUDGET", budget)
    x, labels = one_ulp_apart()
    assert json.dumps(retrieval_metrics(x, labels, k=10)) == json.dumps(reference_metrics(x, labels, 10))


@needs_amx
def test_amx_and_faiss_give_identical_metrics_on_embeddings_like_a_trained_model(monkeypatch):
    x, labels = embeddings_like_a_trained_model()
    monkeypatch.setattr(metrics, "SEARCH_METHOD", "faiss")
    faiss_metrics = retrieval_metrics(x, labels, k=10)
    monkeypatch.setattr(metrics, "SEARCH_METHOD", "amx")
    assert json.dumps(retrieval_metrics(x, labels, k=10)) == json.dumps(faiss_metrics)
    assert 0.2 < faiss_metrics["map_at_r"] < 0.99  # not degenerate


def test_a_list_whose_cut_fp32_cannot_settle_is_ranked_over_all_items(monkeypatch):
    # No room past the depth: every query's cut is unsettled, so every list comes from the brute force.
    monkeypatch.setattr(metrics, "_GUARD_ITEMS", 0)
    x, labels = one_ulp_apart(n=200)
    assert json.dumps(retrieval_metrics(x, labels, k=10)) == json.dumps(reference_metrics(x, labels, 10))


def test_auto_uses_the_amx_search_only_where_it_runs(monkeypatch):
    monkeypatch.setattr(amx_search, "available", lambda: (False, "the CPU lacks amx_bf16"))
    assert search_method("auto") == "faiss"
    with pytest.raises(GlyphTrainError, match="lacks amx_bf16"):
        search_method("amx")
    monkeypatch.setattr(amx_search, "available", lambda: (True, "AMX kernel"))
    assert search_method("auto") == "amx"
    assert search_method("faiss") == "faiss"
    with pytest.raises(ValueError):
        search_method("bf16")


def test_run_logs_name_the_search_and_why(monkeypatch):
    monkeypatch.setattr(amx_search, "available", lambda: (False, "the CPU lacks amx_bf16"))
    assert metrics.describe_search() == "FAISS IndexFlatIP (exact; the CPU lacks amx_bf16)"
    monkeypatch.setattr(amx_search, "available", lambda: (True, "AMX kernel"))
    assert metrics.describe_search() == "AMX kernel (exact)"
    monkeypatch.setattr(metrics, "SEARCH_METHOD", "faiss")
    assert metrics.describe_search() == "FAISS IndexFlatIP (exact; SEARCH_METHOD = faiss)"


def test_the_kernel_is_unavailable_with_a_reason_without_a_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setattr(amx_search, "_cpu_flags", lambda: set(amx_search._CPU_FLAGS))
    amx_search._library.cache_clear()
    try:
        monkeypatch.setenv("GLYPH_TRAIN_CACHE", str(tmp_path))
        ok, reason = amx_search.available()
        assert not ok and "no C++ compiler (no-such-compiler)" in reason
        monkeypatch.setattr(amx_search, "_cpu_flags", lambda: {"avx2"})
        amx_search._library.cache_clear()
        assert amx_search.available() == (False, "the CPU lacks amx_tile, amx_bf16, avx512f, avx512bw")
    finally:
        amx_search._library.cache_clear()
