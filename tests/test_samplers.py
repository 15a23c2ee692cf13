from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from glyph_train.training.samplers import ClassBalancedBatchSampler, BalancedSampler


def uneven_labels(seed=0, num_classes=30, n=600):
    """String labels (like '65227_init') with skewed class sizes, including classes smaller than m."""
    rng = np.random.default_rng(seed)
    ids = rng.zipf(1.6, size=n) % num_classes
    return [f"{i}_isol" for i in ids] + ["rare_a", "rare_b", "rare_b", "lonely"]


def test_every_batch_has_k_classes_of_m():
    labels = uneven_labels()
    sampler = ClassBalancedBatchSampler(labels, classes_per_batch=6, samples_per_class=4)
    assert len(sampler) == len(labels) // 24
    batches = list(sampler)
    assert len(batches) == len(sampler)
    for batch in batches:
        counts = Counter(labels[i] for i in batch)
        assert len(counts) == 6 and set(counts.values()) == {4}
        assert len(batch) == sampler.batch_size == 24


def test_small_classes_are_topped_up_with_their_own_samples():
    labels = ["a"] * 5 + ["b"] * 2 + ["c"]
    sampler = ClassBalancedBatchSampler(labels, classes_per_batch=3, samples_per_class=3, drop_last=False)
    (batch,) = list(sampler)
    by_label = {lab: [i for i in batch if labels[i] == lab] for lab in "abc"}
    assert len(set(by_label["a"])) == 3  # big enough: no repeats
    assert set(by_label["b"]) == {5, 6} and by_label["c"] == [7, 7, 7]


def test_ranks_get_disjoint_equal_shares_that_cover_one_pass():
    labels = np.repeat(np.arange(8), 6)  # 48 samples; global batch 4 classes × 2 = 8; 2 ranks × 3 batches
    ranks = [ClassBalancedBatchSampler(labels, 4, 2, num_replicas=2, rank=r, seed=3) for r in range(2)]
    for s in ranks:
        s.set_epoch(5)
    per_rank = [list(s) for s in ranks]
    assert [len(b) for b in per_rank] == [len(s) for s in ranks] == [3, 3]
    flat = [set(i for b in batches for i in b) for batches in per_rank]
    assert not flat[0] & flat[1]
    assert flat[0] | flat[1] == set(range(48))  # exactly one pass over every sample


@pytest.mark.parametrize("num_replicas", [2, 3])
def test_rank_shares_are_strides_of_one_global_list(num_replicas):
    labels = uneven_labels(1)
    ranks = [ClassBalancedBatchSampler(labels, 5, 3, num_replicas=num_replicas, rank=r) for r in range(num_replicas)]
    assert len({len(s) for s in ranks}) == 1
    global_batches = ranks[0].global_batches(0)
    assert len(global_batches) == len(ranks[0]) * num_replicas
    for r, s in enumerate(ranks):
        assert list(s) == global_batches[r::num_replicas]


def test_deterministic_per_epoch_and_different_across_epochs():
    labels = uneven_labels(2)
    a = ClassBalancedBatchSampler(labels, 4, 2, seed=7)
    b = ClassBalancedBatchSampler(labels, 4, 2, seed=7)
    for epoch in (0, 3):
        a.set_epoch(epoch), b.set_epoch(epoch)
        assert list(a) == list(b)
    a.set_epoch(0)
    b.set_epoch(1)
    assert list(a) != list(b)
    assert list(ClassBalancedBatchSampler(labels, 4, 2, seed=8)) != list(ClassBalancedBatchSampler(labels, 4, 2, seed=7))


def test_classes_and_samples_come_up_evenly():
    labels = np.repeat(np.arange(20), 10)  # one epoch = 200 / (4·2) = 25 batches = 5 visits per class
    seen = Counter(i for batch in ClassBalancedBatchSampler(labels, 4, 2) for i in batch)
    assert set(seen.values()) == {1}  # every sample exactly once
    assert len(seen) == 200


def test_works_as_a_dataloader_batch_sampler():
    labels = torch.arange(40) % 10
    loader = DataLoader(labels, batch_sampler=ClassBalancedBatchSampler(labels.tolist(), 5, 2))
    for batch in loader:
        assert sorted(Counter(batch.tolist()).values()) == [2] * 5


def test_rejects_impossible_requests():
    with pytest.raises(ValueError, match="classes_per_batch"):
        ClassBalancedBatchSampler([0, 0, 1, 1], classes_per_batch=3, samples_per_class=2)
    with pytest.raises(ValueError):
        ClassBalancedBatchSampler([0, 0, 1, 1], 2, 2, num_replicas=2, rank=2)


def test_family_balance_gives_each_family_the_weight_of_one_font():
    # family A ships 9 fonts of 10 glyphs, family B one font of 10: unweighted, A would be 90% of the draws
    families = ["A"] * 90 + ["B"] * 10
    fonts = [f"a{i % 9}" for i in range(90)] + ["b"] * 10
    sampler = BalancedSampler(families, fonts, alpha=1.0, seed=1)
    rows = np.concatenate([sampler.keys(epoch) for epoch in range(200)]) % 100
    assert len(sampler) == 100
    assert 0.47 < (rows < 90).mean() < 0.53  # A's 9 fonts together weigh as much as B's one
    half = np.concatenate([BalancedSampler(families, fonts, 0.5).keys(e) for e in range(200)]) % 100
    assert 0.70 < (half < 90).mean() < 0.80  # 9 fonts count as sqrt(9) = 3: 3/4 of the draws
    assert (np.concatenate([BalancedSampler(families, fonts, 0.0).keys(e) for e in range(50)]) % 100 < 90).mean() > 0.85


def test_label_balance_draws_every_label_equally_often_and_keeps_the_family_balance_within_it():
    # label 0: family A (9 fonts) and B (1 font), 10 glyphs each font; label 1: only family B's font, 10 glyphs
    families = ["A"] * 90 + ["B"] * 10 + ["B"] * 10
    fonts = [f"a{i % 9}" for i in range(90)] + ["b"] * 20
    labels = [0] * 100 + [1] * 10
    keys = lambda beta: np.concatenate([BalancedSampler(  # noqa: E731
        families, fonts, 1.0, seed=1, labels=labels, beta=beta).keys(e) for e in range(200)]) % 110
    plain = keys(0.0)
    assert 0.28 < (plain >= 100).mean() < 0.38  # family balance alone: label 1 weighs 10 of 30
    balanced = keys(1.0)
    assert 0.47 < (balanced >= 100).mean() < 0.53  # each label half of the draws
    label0 = balanced[balanced < 100]
    assert 0.47 < (label0 < 90).mean() < 0.53  # within label 0, A's 9 fonts still weigh as B's one
    with pytest.raises(ValueError, match="label"):
        BalancedSampler(families, fonts, 1.0, beta=1.0)


def test_family_balance_repeats_get_their_own_keys_and_epochs_differ():
    families = ["A"] * 90 + ["B"] * 10
    fonts = [f"a{i % 9}" for i in range(90)] + ["b"] * 10
    sampler = BalancedSampler(families, fonts, alpha=1.0, seed=1)
    keys = sampler.keys(3)
    assert len(set(keys.tolist())) == len(keys)  # a row drawn k times comes as row, row + n, row + 2n ...
    assert (keys >= 100).any()
    rows, repeat = keys % 100, keys // 100
    for row in set(rows.tolist()):
        assert sorted(repeat[rows == row].tolist()) == list(range((rows == row).sum()))
    sampler.set_epoch(3)
    assert list(sampler) == keys.tolist()
    assert not np.array_equal(sampler.keys(3), sampler.keys(4))
    assert np.array_equal(BalancedSampler(families, fonts, 1.0, seed=1).keys(3), keys)  # any process, same stream
