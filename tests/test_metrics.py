"""Metrics against brute-force NumPy references and hand-computed cases; real FAISS throughout."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from glyph_train.errors import GlyphTrainError
from glyph_train.evaluation import amx_search, metrics
from glyph_train.evaluation.metrics import (classification_metrics, effect_size, evaluate_embeddings,
                                            nearest_neighbours, retrieval_metrics)

# ------------------------------------------------------------------------------------------------ references


def ref_retrieval_per_query(emb: np.ndarray, labels: np.ndarray, k: int) -> dict[int, dict[str, float]]:
    """Brute force: full similarity matrix, own index removed by setting it to -inf, full stable sort."""
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = x.astype(np.float64) @ x.T.astype(np.float64)
    np.fill_diagonal(sims, -np.inf)
    out = {}
    for q in range(len(labels)):
        if labels[q] < 0:
            continue
        r = int((labels == labels[q]).sum()) - 1
        if r == 0:
            continue
        ranked = np.argsort(-sims[q], kind="stable")[:-1]  # the last one is q itself (-inf)
        rel = labels[ranked] == labels[q]
        ap = sum(rel[: i + 1].sum() / (i + 1) for i in range(r) if rel[i]) / r
        out[q] = {"hit_at_1": rel[:1].any(), "hit_at_5": rel[:5].any(), f"hit_at_{k}": rel[:k].any(),
                  "precision_at_1": float(rel[0]), "map_at_r": ap}
    return out


def ref_mean(per_query: dict, queries, name: str) -> float:
    vals = [per_query[q][name] for q in queries if q in per_query]
    return float(np.mean(vals)) if vals else math.nan


def ref_effect_size(emb: np.ndarray, labels: np.ndarray, anchors=None) -> float:
    """All ordered (anchor, other) pairs."""
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = x @ x.T
    anchors = range(len(labels)) if anchors is None else anchors
    same, diff = [], []
    for i in anchors:
        if labels[i] < 0:
            continue
        for j in range(len(labels)):
            if j == i or labels[j] < 0:
                continue
            (same if labels[i] == labels[j] else diff).append(sims[i, j])
    return cohen_d(np.array(same), np.array(diff))


def cohen_d(same: np.ndarray, diff: np.ndarray) -> float:
    """Pooled std with equal group weights (num_pairs of each kind are sampled)."""
    return (same.mean() - diff.mean()) / math.sqrt((same.var(ddof=1) + diff.var(ddof=1)) / 2)


def clustered(seed: int = 0, n: int = 300, dim: int = 16):
    """Clustered data in the positive orthant (all cosines > 0) with label noise, unknown (-1) labels,
    singletons, same-label exact duplicates inside clusters, and a different-label exact duplicate pair
    mostly on a reserved axis (cosine < 0.1 with everything else, so it ranks below every other query's top
    max(k, R) and its internal tie cannot change anyone else's metrics)."""
    rng = np.random.default_rng(seed)
    centres = np.abs(rng.normal(size=(12, dim)))
    cluster = rng.integers(0, 12, size=n)
    emb = np.abs(centres[cluster] + 0.35 * rng.normal(size=(n, dim)))
    labels = cluster // 2
    noisy = rng.random(n) < 0.15
    labels[noisy] = rng.integers(0, 6, size=noisy.sum())
    labels[:5] = -1  # identity unknown: gallery distractors only
    labels[5:8] = [100, 101, 102]  # singletons: excluded from retrieval
    dup = rng.choice(np.arange(8, n), size=20, replace=False)  # same-label duplicates
    emb = np.concatenate([emb, emb[dup]])
    labels = np.concatenate([labels, labels[dup]])
    emb = np.concatenate([emb, np.zeros((len(emb), 1))], axis=1)
    pair = np.zeros((2, dim + 1))
    pair[:, :dim] = 0.1 * np.abs(rng.normal(size=dim)) / np.sqrt(dim)  # distinct small cosines: no ties for
    pair[:, -1] = 1.0                                                   # the pair's own queries
    emb = np.concatenate([emb, pair]).astype(np.float32)
    labels = np.concatenate([labels, [0, 1]])  # identical vectors, different labels
    char_classes = np.array(["arabic", "latin", "digit"])[np.arange(len(labels)) % 3]
    return emb, labels, char_classes


# --------------------------------------------------------------------------------------------- classification


def test_classification_matches_reference_and_counts_unknown_labels():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(200, 9)).astype(np.float32)
    labels = rng.integers(0, 9, size=200)
    labels[:7] = -1
    labels[7:10] = 9  # outside the model's 9 classes
    out = classification_metrics(logits, labels)
    known = (labels >= 0) & (labels < 9)
    order = np.argsort(-logits, axis=1)
    assert out["top1"] == pytest.approx(np.mean(order[known, 0] == labels[known]))
    assert out["top5"] == pytest.approx(np.mean((order[known, :5] == labels[known, None]).any(axis=1)))
    assert out["num_unknown_labels"] == 10
    assert out["num_classified"] == 190


def test_classification_top5_with_fewer_than_five_classes_and_no_known_labels():
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    out = classification_metrics(logits, np.array([0, 0]))
    assert out["top1"] == 0.5 and out["top5"] == 1.0
    assert math.isnan(classification_metrics(logits, np.array([-1, 5]))["top1"])


# -------------------------------------------------------------------------------------------------- retrieval


@pytest.mark.parametrize("method", ["faiss", "amx"])  # amx: the AMX kernel (test_neighbour_search)
@pytest.mark.parametrize("budget", [metrics._SEARCH_BUDGET, 50])  # 50: many FAISS batches of different depths
def test_retrieval_matches_brute_force_reference(monkeypatch, budget, method):
    if method == "amx" and not amx_search.available()[0]:
        pytest.skip(f"no AMX search here: {amx_search.available()[1]}")
    monkeypatch.setattr(metrics, "SEARCH_METHOD", method)
    monkeypatch.setattr(metrics, "_SEARCH_BUDGET", budget)
    emb, labels, _ = clustered()
    out = retrieval_metrics(emb, labels, k=10)
    ref = ref_retrieval_per_query(emb, labels, 10)
    for name in ("hit_at_1", "hit_at_5", "hit_at_10", "precision_at_1", "map_at_r"):
        assert out[name] == pytest.approx(ref_mean(ref, ref, name), abs=1e-12), name
    assert out["num_queries"] == len(ref)
    assert out["num_without_positive"] == len(labels) - len(ref)
    assert 0.3 < out["map_at_r"] < 0.95  # not a degenerate data set


def test_leave_one_out_drops_own_index_not_first_hit():
    # Exact duplicate pairs, each pair alone on its own axis: the partner ties with the query at similarity 1.
    # Whatever order FAISS returns the tie in, dropping the first hit would drop the partner for one of each
    # pair and leave a different-label item at rank 1.
    dim = 8
    emb = np.concatenate([np.eye(dim), np.eye(dim)]).astype(np.float32)
    labels = np.concatenate([np.arange(dim), np.arange(dim)])
    out = retrieval_metrics(emb, labels, k=3)
    assert out["precision_at_1"] == 1.0 and out["map_at_r"] == 1.0 and out["num_queries"] == 2 * dim
    scores, idx = nearest_neighbours(emb, np.arange(2 * dim), k=3)
    assert (idx != np.arange(2 * dim)[:, None]).all()
    assert (idx[:, 0] == (np.arange(2 * dim) + dim) % (2 * dim)).all()
    assert np.allclose(scores[:, 0], 1.0)


def test_more_ties_than_search_depth_still_excludes_the_query():
    emb = np.ones((15, 4), dtype=np.float32)  # 15 identical vectors: the query may fall outside its own top k+1
    _, idx = nearest_neighbours(emb, np.arange(15), k=3)
    assert idx.shape == (15, 3)
    assert (idx != np.arange(15)[:, None]).all()
    assert all(len(set(row)) == 3 for row in idx.tolist())


def test_hand_computed_map_at_r_and_precision():
    # Points on the unit circle (degrees); cosine ranks by angular distance.
    #   Q0=0 (L0), A=10 (L0), X=22 (L1), B=30 (L0), C=100 (L0), Y=120 (L1)
    # query  ranking (nearest first)     R  top-R relevance  AP@R
    # Q0     A X B C Y                    3  1 0 1            (1 + 2/3)/3 = 5/9
    # A      Q0 X B C Y                   3  1 0 1            5/9
    # B      X A Q0 C Y                   3  0 1 1            (1/2 + 2/3)/3 = 7/18
    # C      Y B X A Q0                   3  0 1 0            (1/2)/3 = 1/6
    # X      B A Q0 C Y                   1  0                0
    # Y      C B X A Q0                   1  0                0
    # MAP@R = (5/9 + 5/9 + 7/18 + 1/6) / 6 = 5/18; precision@1 = hit@1 = 2/6; hit@5 = 1
    deg = np.radians([0, 10, 22, 30, 100, 120])
    emb = np.stack([np.cos(deg), np.sin(deg)], axis=1).astype(np.float32)
    labels = np.array([0, 0, 1, 0, 0, 1])
    out = retrieval_metrics(emb, labels, k=10)
    assert out["map_at_r"] == pytest.approx(5 / 18)
    assert out["precision_at_1"] == pytest.approx(1 / 3)
    assert out["hit_at_1"] == pytest.approx(1 / 3)
    assert out["hit_at_5"] == 1.0 and out["hit_at_10"] == 1.0
    _, idx = nearest_neighbours(emb, [3, 4], k=5)
    assert idx.tolist() == [[2, 1, 0, 4, 5], [5, 3, 2, 1, 0]]


def test_retrieval_defensively_normalises():
    emb, labels, _ = clustered(seed=3, n=120)
    scaled = emb * np.random.default_rng(0).uniform(0.1, 10.0, size=(len(emb), 1)).astype(np.float32)
    assert retrieval_metrics(scaled, labels) == retrieval_metrics(emb, labels)


# ------------------------------------------------------------------------------------------------ effect size


def test_effect_size_exact_when_all_pairs_fit():
    emb, labels, _ = clustered(seed=2, n=80)
    assert effect_size(emb, labels, num_pairs=10**6) == pytest.approx(ref_effect_size(emb, labels), rel=1e-5)
    anchors = np.arange(10, 40)
    assert effect_size(emb, labels, num_pairs=10**6, anchors=anchors) == pytest.approx(
        ref_effect_size(emb, labels, anchors), rel=1e-5)


def test_effect_size_hand_computed():
    # 2-D unit vectors at 0, 60 (label 0) and 180, 120, 150 (label 1). Ordered pairs:
    # same: (0,60) cos .5 twice; (180,120),(180,150),(120,150): cos .5, cos30, cos30, each twice
    # diff: 0 vs {180,120,150}: -1, -.5, -cos30; 60 vs {180,120,150}: -.5, .5, 0; each twice
    deg = np.radians([0, 60, 180, 120, 150])
    emb = np.stack([np.cos(deg), np.sin(deg)], axis=1)
    c30 = math.cos(math.radians(30))
    same = np.array([0.5, 0.5, c30, c30] * 2)
    diff = np.array([-1, -0.5, -c30, -0.5, 0.5, 0.0] * 2)
    expected = (same.mean() - diff.mean()) / math.sqrt((same.var(ddof=1) + diff.var(ddof=1)) / 2)
    assert effect_size(emb, np.array([0, 0, 1, 1, 1]), num_pairs=1000) == pytest.approx(expected, rel=1e-6)


def test_effect_size_sampled_approximates_exact_and_is_seeded():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 20, size=1500)
    emb = rng.normal(size=(20, 32))[labels] + 0.9 * rng.normal(size=(1500, 32))
    exact = ref_effect_size_fast(emb, labels)
    sampled = effect_size(emb, labels, num_pairs=20_000, seed=0)  # 2.2M ordered pairs: sampling mode
    assert sampled == pytest.approx(exact, abs=0.03)
    assert effect_size(emb, labels, num_pairs=20_000, seed=0) == sampled
    assert effect_size(emb, labels, num_pairs=20_000, seed=1) != sampled


def ref_effect_size_fast(emb: np.ndarray, labels: np.ndarray) -> float:
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = x @ x.T
    off = ~np.eye(len(labels), dtype=bool)
    same_mask = (labels[:, None] == labels[None, :]) & off
    return cohen_d(sims[same_mask], sims[~same_mask & off])


def test_effect_size_undefined_is_nan():
    emb = np.eye(3)
    assert math.isnan(effect_size(emb, np.array([0, 1, 2])))  # no same-label pairs
    assert math.isnan(effect_size(emb, np.array([4, 4, 4])))  # no different-label pairs


# ------------------------------------------------------------------------------------------------- evaluation


def test_evaluate_embeddings_keys_and_by_char_class_consistency():
    emb, labels, char_classes = clustered(seed=4)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(len(labels), 6)).astype(np.float32)
    out = evaluate_embeddings(logits, emb, labels, char_classes, k=10, seed=0)
    required = {"top1", "top5", "hit_at_1", "hit_at_5", "hit_at_10", "precision_at_1", "map_at_r",
                "effect_size", "num_queries", "by_char_class"}
    assert required <= set(out)
    assert set(out["by_char_class"]) == {"arabic", "latin", "digit"}

    ref = ref_retrieval_per_query(emb, labels, 10)
    per = out["by_char_class"]
    for name in ("hit_at_10", "map_at_r", "precision_at_1"):
        weighted = sum(m[name] * m["num_queries"] for m in per.values()) / out["num_queries"]
        assert weighted == pytest.approx(out[name], abs=1e-12)
    assert sum(m["num_queries"] for m in per.values()) == out["num_queries"] == len(ref)
    for cc, m in per.items():  # queries of one class, the gallery stays the whole set
        queries = np.flatnonzero(char_classes == cc)
        assert m["map_at_r"] == pytest.approx(ref_mean(ref, queries, "map_at_r"), abs=1e-12)
        assert m["effect_size"] == pytest.approx(ref_effect_size(emb, labels, queries), rel=1e-5)
    assert out["effect_size"] == pytest.approx(ref_effect_size(emb, labels), rel=1e-5)
    assert out["top1"] == classification_metrics(logits, labels)["top1"]
    assert out["num_unknown_labels"] == 5 + 3  # -1 and the singleton labels outside the 6 classes


def test_evaluate_embeddings_is_deterministic_and_rejects_non_finite():
    emb, labels, cc = clustered(seed=6, n=100)
    first = evaluate_embeddings(None, emb, labels, cc)
    assert json.dumps(first) == json.dumps(evaluate_embeddings(None, emb, labels, cc))  # NaN-safe comparison
    assert math.isnan(first["top1"]) and first["num_unknown_labels"] == 0  # no logits: no classification
    emb[3, 0] = np.nan
    with pytest.raises(GlyphTrainError, match="NaN"):
        evaluate_embeddings(None, emb, labels, cc)


def test_nan_logits_are_refused_not_counted_as_hits() -> None:
    from glyph_train.errors import GlyphTrainError
    from glyph_train.evaluation.metrics import classification_metrics

    logits = np.zeros((3, 4), dtype=np.float32)
    logits[:, 0] = np.nan
    with pytest.raises(GlyphTrainError, match="NaN"):
        classification_metrics(logits, np.zeros(3, dtype=np.int64))
