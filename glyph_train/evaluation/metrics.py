"""Evaluation metrics: classification top-k, exact leave-one-out retrieval, effect size, by char_class.

NumPy, FAISS and the AMX kernel of amx_search.py, so the trainer's main process and `glyph-train evaluate` share one
implementation.

Label conventions (integer labels in the model's class space):
- Classification counts only labels in [0, num_classes); anything else (e.g. -1 or an index >= the
  number of logits for a label the model never saw) is excluded and counted as `num_unknown_labels`.
- Retrieval and effect size treat a negative label as "identity unknown": such items are never queries
  and never a match, but stay in the gallery as distractors. Give labels the model does not know indices
  >= num_classes (one per distinct name) to keep them in retrieval.
- Undefined metrics (nothing to average) are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import faiss
import numpy as np

from glyph_train.errors import GlyphTrainError
from glyph_train.evaluation import amx_search

HIT_CUTOFFS = (1, 5)  # plus k: hit_at_1, hit_at_5, hit_at_k
# Upper bound on neighbour-table entries (queries x neighbours) held at once during the search.
_SEARCH_BUDGET = 1 << 22


def normalise(embeddings: np.ndarray) -> np.ndarray:
    """float32, C-contiguous, rows L2-normalised (zero rows stay zero) — what IndexFlatIP needs for cosine."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (N, D), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise GlyphTrainError("embeddings contain NaN or inf: the model has diverged; use an earlier checkpoint")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


# ---------------------------------------------------------------------------------------------- classification


def _topk_hits(logits: np.ndarray, labels: np.ndarray, ks: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Per-row hit flags for each k. Rank = number of logits strictly above the true one, so ties count in
    the label's favour and the result does not depend on sort order."""
    out = {k: np.zeros(len(labels), dtype=bool) for k in ks}
    chunk = max(1, (1 << 24) // max(1, logits.shape[1]))
    for s in range(0, len(labels), chunk):
        lg, lb = logits[s : s + chunk], labels[s : s + chunk]
        true = lg[np.arange(len(lb)), lb]
        rank = (lg > true[:, None]).sum(axis=1)
        for k in ks:
            out[k][s : s + chunk] = rank < k
    return out


def _classification_per_item(logits: np.ndarray | None, labels: np.ndarray) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """(known mask, {1: top1 flags, 5: top5 flags}) over all items; flags are False where unknown."""
    n = len(labels)
    if logits is None:
        return np.zeros(n, dtype=bool), {1: np.zeros(n, bool), 5: np.zeros(n, bool)}
    logits = np.asarray(logits)
    if logits.ndim != 2 or len(logits) != n:
        raise ValueError(f"logits shape {logits.shape} does not match {n} labels")
    if not np.isfinite(logits).all():  # a NaN true logit would rank first and count as a hit
        raise GlyphTrainError("logits contain NaN or inf: the model has diverged; use an earlier checkpoint")
    known = (labels >= 0) & (labels < logits.shape[1])
    hits = {1: np.zeros(n, bool), 5: np.zeros(n, bool)}
    sub = _topk_hits(logits[known], labels[known], (1, 5))
    for k in hits:
        hits[k][known] = sub[k]
    return known, hits


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict:
    """top1/top5 accuracy over items whose label is one of the model's classes; the rest are counted."""
    labels = np.asarray(labels, dtype=np.int64)
    known, hits = _classification_per_item(logits, labels)
    return {
        "top1": _mean(hits[1], known),
        "top5": _mean(hits[5], known),
        "num_classified": int(known.sum()),
        "num_unknown_labels": int((~known).sum()),
    }


# ------------------------------------------------------------------------------------ ambiguity-aware top-1
# Some labels are drawn identically (Latin A / Cyrillic А / Greek Α; l / I in many sans; an Arabic fina equal
# to its isol in some fonts): no model can tell them apart from the outline. top1_equiv also counts a
# prediction that the same font draws with the very same outline as the true glyph.


def predictions(logits: np.ndarray) -> np.ndarray:
    """The arg-max class of each row (first of tied maxima)."""
    return np.asarray(logits).argmax(axis=1)


def equivalent_top1(logits: np.ndarray, labels: np.ndarray, fonts: np.ndarray | list,
                    outline_hashes: np.ndarray | list) -> np.ndarray:
    """Per-item flags: top-1 right, or the predicted label is drawn by the item's font (among the items
    given) with an outline whose hash equals the item's. Items whose label is not one of the model's
    classes are False (as for top1). Any hashable font ids and outline hashes (e.g. contours text digests,
    or rendered-image digests where only images are at hand)."""
    labels = np.asarray(labels, dtype=np.int64)
    logits = np.asarray(logits)
    known, top = _classification_per_item(logits, labels)
    if len(fonts) != len(labels) or len(outline_hashes) != len(labels):
        raise ValueError(f"{len(labels)} labels, {len(fonts)} fonts, {len(outline_hashes)} outline hashes")
    drawn: dict[tuple, set] = {}
    for font, label, digest in zip(fonts, labels.tolist(), outline_hashes):
        drawn.setdefault((font, label), set()).add(digest)
    pred = predictions(logits).tolist()
    flags = top[1].copy()
    for i in np.flatnonzero(known & ~top[1]).tolist():
        flags[i] = outline_hashes[i] in drawn.get((fonts[i], pred[i]), ())
    return flags


def confused_pairs(logits: np.ndarray, labels: np.ndarray, top: int = 30,
                   equivalent: np.ndarray | None = None) -> list[dict]:
    """The `top` most frequent (true label, predicted label) errors among known labels, most frequent first
    (ties by label ids): {"true", "predicted", "count", "equivalent"} with class ids; `equivalent` counts
    those errors that top1_equiv forgives (given its per-item flags), else it is None."""
    labels = np.asarray(labels, dtype=np.int64)
    logits = np.asarray(logits)
    known = (labels >= 0) & (labels < logits.shape[1])
    pred = predictions(logits)
    wrong = known & (pred != labels)
    pairs, inverse, counts = np.unique(np.stack([labels[wrong], pred[wrong]], axis=1), axis=0,
                                       return_inverse=True, return_counts=True)
    forgiven = None
    if equivalent is not None:
        forgiven = np.bincount(inverse.ravel(), weights=np.asarray(equivalent)[wrong], minlength=len(pairs))
    order = sorted(range(len(pairs)), key=lambda j: (-counts[j], *pairs[j]))[:top]
    return [{"true": int(pairs[j][0]), "predicted": int(pairs[j][1]), "count": int(counts[j]),
             "equivalent": None if forgiven is None else int(forgiven[j])} for j in order]


# --------------------------------------------------------------------------------------------------- retrieval


def _build_index(x: np.ndarray) -> faiss.IndexFlatIP:
    index = faiss.IndexFlatIP(x.shape[1])  # exact inner product == cosine on normalised rows
    index.add(x)
    return index


# Neighbour search for retrieval_metrics: "faiss" (IndexFlatIP), "amx" (the fused bf16/fp32 kernel of
# amx_search.py: 4.5x FAISS on 100k real embeddings on a 2-core AMX box, identical metrics, BENCHMARKS.md 5d)
# or "auto" (amx where it can run: an AMX CPU and a C++ compiler, else faiss).
SEARCH_METHOD = "auto"
# Each query's list holds this many items past the depth its metrics read: if the last of them scores clearly
# below the depth-th, no item outside the list can belong inside (see _canonical_neighbours).
_GUARD_ITEMS = 16


def _fp32_error(dim: int) -> float:
    """Bound on |fp32 dot product - exact| for vectors of norm <= 1, in any summation order (d * 2^-24, with room)."""
    return 1.01 * dim * 2.0**-24 + 1e-7


def search_method(method: str | None = None) -> str:
    method = method or SEARCH_METHOD
    if method not in ("auto", "amx", "faiss"):
        raise ValueError(f"unknown search method {method!r} (auto, amx or faiss)")
    if method == "faiss":
        return method
    ok, reason = amx_search.available()
    if method == "amx" and not ok:
        raise GlyphTrainError(f"the AMX neighbour search cannot run here ({reason}); use the faiss search method")
    return "amx" if ok else "faiss"


def describe_search() -> str:
    """Which search retrieval_metrics uses here, and why, for run logs."""
    if search_method() == "amx":
        return "AMX kernel (exact)"
    why = "SEARCH_METHOD = faiss" if SEARCH_METHOD == "faiss" else amx_search.available()[1]
    return f"FAISS IndexFlatIP (exact; {why})"


def _faiss_neighbours(index: faiss.IndexFlatIP, x: np.ndarray, queries: np.ndarray,
                      depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-`depth` neighbours of x[queries] excluding each query's own index (not its first hit: identical
    glyphs tie at similarity 1 and may rank before the query itself). (scores, indices), best first."""
    kk = depth + 1
    scores, idx = index.search(x[queries], kk)
    is_self = idx == queries[:, None]
    # More than kk exact ties can push the query out of its own list: then all kk are equally good, drop the last.
    is_self[~is_self.any(axis=1), -1] = True
    keep = ~is_self
    return scores[keep].reshape(len(queries), depth), idx[keep].reshape(len(queries), depth)


def nearest_neighbours(embeddings: np.ndarray, queries: np.ndarray | list[int], k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out top-k of some queries, e.g. for retrieval images in W&B: (cosine scores, indices), each
    (len(queries), min(k, N-1)), best first — FAISS's (D, I) order."""
    x = normalise(embeddings)
    queries = np.asarray(queries, dtype=np.int64)
    depth = min(k, len(x) - 1)
    if depth <= 0 or len(queries) == 0:
        return np.zeros((len(queries), max(depth, 0)), np.float32), np.zeros((len(queries), max(depth, 0)), np.int64)
    return _faiss_neighbours(_build_index(x), x, queries, depth)


def _faiss_plan(rows: np.ndarray, width: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """FAISS search batches: rows sorted by the list width they need, each batch searched to its widest, as
    many as keep the neighbour table within _SEARCH_BUDGET entries (at least one row per batch)."""
    order = rows[np.argsort(width[rows], kind="stable")]
    plan, start = [], 0
    while start < len(order):
        cost = np.arange(1, len(order) - start + 1) * (width[order[start:]] + 1)
        end = start + max(1, int(np.searchsorted(cost, _SEARCH_BUDGET, side="right")))
        plan.append((order[start:end], int(width[order[end - 1]])))
        start = end
    return plan


def _score_queries(values: dict[str, np.ndarray], batch: np.ndarray, nbr: np.ndarray, labels: np.ndarray,
                   r: np.ndarray, cutoffs: list[int]) -> None:
    """Fill each query's metrics from its neighbour list (best first; only the first max(k, R) are read)."""
    rel = (labels[nbr] == labels[batch][:, None]) & (nbr >= 0)  # neighbour has the query's label
    for c in cutoffs:
        values[f"hit_at_{c}"][batch] = rel[:, :c].any(axis=1)
    values["precision_at_1"][batch] = rel[:, 0]
    # MAP@R (Musgrave et al. 2020): (1/R) * sum_{i<=R} precision@i * rel(i)
    rb = r[batch]
    rel_r = rel & (np.arange(rel.shape[1])[None, :] < rb[:, None])
    precision_at_i = np.cumsum(rel_r, axis=1) / np.arange(1, rel.shape[1] + 1)
    values["map_at_r"][batch] = (precision_at_i * rel_r).sum(axis=1) / rb


def _canonical_neighbours(x: np.ndarray, queries: np.ndarray, scores: np.ndarray, nbr: np.ndarray,
                          depth: np.ndarray) -> np.ndarray:
    """Each query's first depth[i] neighbours in the canonical order: exact score (fp64 of the fp32 vectors)
    descending, the higher index first among equal scores.

    `scores`/`nbr` are any exact fp32 search's lists (FAISS's, the AMX kernel's), best first, with some items
    past the depth. fp32 rounding (at most `_fp32_error` per score) can only swap items whose fp32 scores lie
    within twice that: only those get fp64 scores, and each list is re-sorted with them (an item more than
    twice the error from both neighbours keeps its place against any exact score). When the depth-th score is
    not clearly above the last listed one, an item outside the list might belong inside: that query is ranked
    over all items. Both searches give the same lists this way, which FAISS's own order does not even across
    batch sizes."""
    n, dim = x.shape
    err = _fp32_error(dim)
    rows = np.arange(len(queries))
    listed = (nbr >= 0).sum(axis=1)
    complete = (listed >= n - 1) | (scores[rows, depth - 1] - err > scores[rows, listed - 1] + err)
    with np.errstate(invalid="ignore"):  # -inf - -inf past the list
        close = (scores[:, :-1] - scores[:, 1:] <= 2 * err) & (nbr[:, 1:] >= 0)
    # Entries that could swap with a neighbour, in the lists that need no brute force.
    tied = np.zeros(nbr.shape, bool)
    tied[:, :-1] |= close
    tied[:, 1:] |= close
    tied &= complete[:, None]
    key = scores.astype(np.float64)
    q, j = np.nonzero(tied)
    for s in range(0, len(q), 1 << 16):
        qs, js = q[s : s + (1 << 16)], j[s : s + (1 << 16)]
        key[qs, js] = _exact_scores(x, queries[qs], nbr[qs, js])
    resort = np.flatnonzero(tied.any(axis=1))
    out = nbr.copy()
    out[resort] = np.take_along_axis(nbr[resort], np.lexsort((-nbr[resort], -key[resort]), axis=1), axis=1)
    for i in np.flatnonzero(~complete):  # brute force over every item
        sims = _exact_scores(x, np.full(n, queries[i]), np.arange(n))
        sims[queries[i]] = -np.inf
        out[i, : depth[i]] = np.lexsort((-np.arange(n), -sims))[: depth[i]]
    return out[:, : int(depth.max())]


def _exact_scores(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """fp64 inner products of the rows a[i], b[i] of x (products of fp32 are exact in fp64), summed in one order
    for every pair, so identical vectors score identically wherever they sit."""
    return np.einsum("pd,pd->p", x[a], x[b], dtype=np.float64)


def _search(x: np.ndarray, queries: np.ndarray, listed: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(rows of `queries`, fp32 scores, indices) in blocks: each query's listed[i] best other items, best first."""
    if search_method() == "amx":
        yield from amx_search.leave_one_out_topd(x, queries, listed)
        return
    index = _build_index(x)
    for rows, width in _faiss_plan(np.arange(len(queries)), listed):
        scores, nbr = _faiss_neighbours(index, x, queries[rows], width)
        for s in range(0, len(rows), 1024):  # cache-sized blocks for what follows
            yield rows[s : s + 1024], scores[s : s + 1024], nbr[s : s + 1024]


def _retrieval_per_query(x: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-item retrieval scores from a single exact search of every query.

    Returns (query mask, {metric: per-item values}); a query is an item with a known label and at least one
    other item of that label. MAP@R needs each query's top R (R = number of other same-label items, which can
    exceed k), so every query is searched to depth max(k, R).

    The search (FAISS, or the AMX kernel where it runs) lists _GUARD_ITEMS more per query, from which
    `_canonical_neighbours` settles the order of near-ties: both searches give identical metrics.
    """
    n = len(labels)
    cutoffs = sorted({c for c in (*HIT_CUTOFFS, k) if c <= k})
    values = {f"hit_at_{c}": np.zeros(n) for c in cutoffs}
    values["precision_at_1"] = np.zeros(n)
    values["map_at_r"] = np.zeros(n)

    r = np.zeros(n, dtype=np.int64)
    known = labels >= 0
    _, inverse, counts = np.unique(labels[known], return_inverse=True, return_counts=True)
    r[known] = counts[inverse] - 1
    is_query = r > 0
    if not is_query.any():
        return is_query, values

    queries = np.flatnonzero(is_query)
    depth = np.minimum(np.maximum(k, r[queries]), n - 1)
    listed = np.minimum(depth + _GUARD_ITEMS, n - 1)
    for rows, scores, nbr in _search(x, queries, listed):
        top = _canonical_neighbours(x, queries[rows], scores, nbr, depth[rows])
        _score_queries(values, queries[rows], top, labels, r, cutoffs)
    return is_query, values


def retrieval_metrics(embeddings: np.ndarray, labels: np.ndarray, k: int = 10) -> dict:
    """Exact leave-one-out retrieval (cosine, ranked by exact score, ties to the higher index; see
    _canonical_neighbours): hit@1/5/k, precision@1, MAP@R over queries that have another item of their label;
    the others are counted, not scored."""
    labels = np.asarray(labels, dtype=np.int64)
    is_query, values = _retrieval_per_query(normalise(embeddings), labels, k)
    out = {name: _mean(v, is_query) for name, v in values.items()}
    out["num_queries"] = int(is_query.sum())
    out["num_without_positive"] = int((~is_query).sum())
    return out


# ------------------------------------------------------------------------------------------------- effect size


def effect_size(
    embeddings: np.ndarray,
    labels: np.ndarray,
    num_pairs: int = 100_000,
    seed: int = 0,
    anchors: np.ndarray | None = None,
) -> float:
    """Cohen's d between same-label and different-label cosine similarities.

    Pairs are ordered (anchor, other): anchor from `anchors` (default: every item), other any item but the
    anchor; items with a negative label take no part. For each kind, when there are at most `num_pairs` such
    pairs all are used (exact), otherwise `num_pairs` are drawn uniformly with replacement using
    numpy.random.default_rng(seed). d = (mean_same - mean_diff) / sqrt((var_same + var_diff) / 2), variances
    with ddof=1 (Cohen's pooled std for equal group sizes); NaN if undefined (fewer than 2 pairs of a kind,
    or zero spread).
    """
    x = normalise(embeddings)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    # Gallery sorted by label: each label is one contiguous block, so "the r-th other item of the same
    # (different) label" is index arithmetic and pairs can be enumerated or sampled without building them all.
    valid = np.flatnonzero(labels >= 0)
    gallery = valid[np.argsort(labels[valid], kind="stable")]
    uniq, block_start, block_count = np.unique(labels[gallery], return_index=True, return_counts=True)
    pos = np.full(n, -1, dtype=np.int64)
    pos[gallery] = np.arange(len(gallery))

    if anchors is None:
        a = gallery
    else:
        a = np.asarray(anchors, dtype=np.int64)
        a = a[labels[a] >= 0]
    block = np.searchsorted(uniq, labels[a])
    n_same = block_count[block] - 1
    n_diff = len(gallery) - block_count[block]
    rng = np.random.default_rng(seed)

    def cosines(per_anchor: np.ndarray, partner) -> np.ndarray:
        cum = np.cumsum(per_anchor)
        total = int(cum[-1]) if len(cum) else 0
        if total == 0:
            return np.empty(0)
        t = np.arange(total) if total <= num_pairs else rng.integers(0, total, size=num_pairs)
        which = np.searchsorted(cum, t, side="right")  # anchor owning pair number t
        rank = t - (cum[which] - per_anchor[which])  # pair's rank among that anchor's partners
        i = a[which]
        j = gallery[partner(which, rank)]
        sims = np.empty(len(t))
        for s in range(0, len(t), 1 << 16):
            sims[s : s + (1 << 16)] = np.einsum("ij,ij->i", x[i[s : s + (1 << 16)]], x[j[s : s + (1 << 16)]])
        return sims

    def same_partner(which, rank):  # rank-th item of the anchor's block, skipping the anchor itself
        p = block_start[block[which]] + rank
        return p + (p >= pos[a[which]])

    def diff_partner(which, rank):  # rank-th item outside the anchor's block
        b0, bn = block_start[block[which]], block_count[block[which]]
        return rank + np.where(rank >= b0, bn, 0)

    same = cosines(n_same, same_partner)
    diff = cosines(n_diff, diff_partner)
    if len(same) < 2 or len(diff) < 2:
        return math.nan
    # Equal-weight pooling: what Cohen's pooled std is for the sampled case (num_pairs of each kind), and the
    # same population quantity in the exact case, where different-label pairs far outnumber same-label ones.
    pooled = math.sqrt((same.var(ddof=1) + diff.var(ddof=1)) / 2)
    if pooled == 0.0:
        return math.nan
    return float((same.mean() - diff.mean()) / pooled)


# ----------------------------------------------------------------------------------------------------- overall


def _mean(values: np.ndarray, mask: np.ndarray) -> float:
    return float(values[mask].mean()) if mask.any() else math.nan


def evaluate_embeddings(
    logits: np.ndarray | None,
    embeddings: np.ndarray,
    labels: np.ndarray,
    char_classes: np.ndarray | list[str],
    k: int = 10,
    seed: int = 0,
    num_pairs: int = 100_000,
    fonts: np.ndarray | list | None = None,
    outline_hashes: np.ndarray | list | None = None,
    families: np.ndarray | list | None = None,
) -> dict:
    """All evaluation metrics, overall and per char_class (queries of that class against the whole gallery).

    With `fonts` and `outline_hashes` (per item) also top1_equiv (see `equivalent_top1`); with `families`
    also by_family {family: same keys}.

    Keys: top1, top5, hit_at_1, hit_at_5, hit_at_10 (hit_at_k), precision_at_1, map_at_r, effect_size,
    num_queries (retrieval queries scored), num_unknown_labels (excluded from top-k), num_without_positive
    (excluded from retrieval), by_char_class {char_class: same keys without by_char_class}.
    """
    labels = np.asarray(labels, dtype=np.int64)
    char_classes = np.asarray(char_classes, dtype=object).astype(str)  # None (unknown class) -> "None"
    if len(char_classes) != len(labels) or len(embeddings) != len(labels):
        raise ValueError(f"{len(embeddings)} embeddings, {len(labels)} labels, {len(char_classes)} char classes")
    x = normalise(embeddings)
    known, top = _classification_per_item(logits, labels)
    equiv = None
    if logits is not None and fonts is not None and outline_hashes is not None:
        equiv = equivalent_top1(logits, labels, fonts, outline_hashes)
    is_query, values = _retrieval_per_query(x, labels, k)

    def summary(mask: np.ndarray, anchors: np.ndarray | None) -> dict:
        out = {"top1": _mean(top[1], known & mask), "top5": _mean(top[5], known & mask)}
        if equiv is not None:
            out["top1_equiv"] = _mean(equiv, known & mask)
        out.update({name: _mean(v, is_query & mask) for name, v in values.items()})
        out["effect_size"] = effect_size(x, labels, num_pairs=num_pairs, seed=seed, anchors=anchors)
        out["num_queries"] = int((is_query & mask).sum())
        out["num_unknown_labels"] = int((~known & mask).sum()) if logits is not None else 0
        out["num_without_positive"] = int((~is_query & mask).sum())
        return out

    result = summary(np.ones(len(labels), dtype=bool), None)
    result["by_char_class"] = {
        cc: summary(char_classes == cc, np.flatnonzero(char_classes == cc)) for cc in sorted(set(char_classes))
    }
    if families is not None:
        families = np.asarray(families, dtype=object).astype(str)
        result["by_family"] = {
            f: summary(families == f, np.flatnonzero(families == f)) for f in sorted(set(families))
        }
    return result
