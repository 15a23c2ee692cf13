"""Class-balanced batches for SupCon: k classes × m samples per batch, so every anchor has m - 1 positives.

Every rank builds the same global list of batches from (seed, epoch) and takes every num_replicas-th one, so
ranks get disjoint batches and the same number of them with no communication.

Within an epoch, classes are visited by walking through successive random permutations of all classes, and
each class's samples by walking through a random permutation of that class: every class and every sample
comes up about equally often (exactly once per pass when class sizes are multiples of m and the epoch is a
whole number of passes). A class with fewer than m samples contributes all of them, topped up with repeats
drawn with replacement; a class with a single sample therefore appears as m copies of it (drop singletons
upstream, e.g. `--drop-singletons`, if those positives should not count).
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class ClassBalancedBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices, `classes_per_batch * samples_per_class` long, for one rank.

    `len(self)` batches per epoch on every rank: the dataset size divided by the global batch
    (k·m·num_replicas), rounded down with `drop_last` (at least 1), up otherwise. Call `set_epoch(epoch)`
    before each epoch, as with DistributedSampler. `batch_size` and `drop_last` are exposed for wrappers
    such as Accelerate's BatchSamplerShard (with num_replicas=1, it strides the batches over processes the
    same way).
    """

    def __init__(self, labels: Sequence, classes_per_batch: int, samples_per_class: int,
                 num_replicas: int = 1, rank: int = 0, seed: int = 0, drop_last: bool = True):
        classes, inverse = np.unique(np.asarray(labels), return_inverse=True)
        if not 1 <= classes_per_batch <= len(classes):
            raise ValueError(f"classes_per_batch={classes_per_batch} needs 1..{len(classes)} (the number of classes)")
        if samples_per_class < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need samples_per_class >= 1 and 0 <= rank < num_replicas, got "
                             f"{samples_per_class}, {rank}, {num_replicas}")
        order = np.argsort(inverse, kind="stable")
        self.members = np.split(order, np.cumsum(np.bincount(inverse))[:-1])  # dataset indices per class
        self.k, self.m = classes_per_batch, samples_per_class
        self.num_replicas, self.rank, self.seed, self.drop_last = num_replicas, rank, seed, drop_last
        self.batch_size = self.k * self.m
        self.epoch = 0
        per_rank = len(inverse) / (self.batch_size * num_replicas)
        self.num_batches = max(1, math.floor(per_rank) if drop_last else math.ceil(per_rank))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def global_batches(self, epoch: int) -> list[list[int]]:
        """The batches of all ranks for `epoch`, in order (rank r gets positions r, r + num_replicas, ...)."""
        rng = np.random.default_rng([self.seed, epoch])
        class_stream: list[int] = []  # upcoming classes, consumed from the end
        sample_queues: dict[int, list[int]] = {}
        batches = []
        for _ in range(self.num_batches * self.num_replicas):
            chosen: list[int] = []
            deferred: list[int] = []
            while len(chosen) < self.k:
                if not class_stream:
                    class_stream = rng.permutation(len(self.members)).tolist()
                c = class_stream.pop()
                # only where one permutation ends and the next begins can a class repeat within a batch
                (deferred if c in chosen else chosen).append(c)
            class_stream.extend(reversed(deferred))
            batches.append([i for c in chosen for i in self._take(c, sample_queues, rng)])
        return batches

    def _take(self, c: int, queues: dict[int, list[int]], rng: np.random.Generator) -> list[int]:
        members = self.members[c]
        if len(members) < self.m:
            return members.tolist() + rng.choice(members, self.m - len(members)).tolist()
        queue = queues.get(c, [])
        if len(queue) < self.m:  # a new pass: the last pass's leftovers, then every other member once
            queue = rng.permutation(np.setdiff1d(members, queue)).tolist() + queue
        queues[c] = queue[: -self.m]
        return queue[-self.m :]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.global_batches(self.epoch)[self.rank :: self.num_replicas]


class BalancedSampler(Sampler[int]):
    """Per epoch, `len(families)` draws with replacement, glyph i with probability ∝ F_i^-alpha, where F_i is
    the number of fonts of glyph i's family: alpha 1 gives every family the weight of one font, so a family
    shipped in nine weights no longer counts nine times as much as a one-weight display face.

    With `labels` and beta > 0, glyph i's weight is also divided by L^beta, L the summed weight of its
    label: beta 1 draws every label equally often (an Arabic positional form, drawn by a few dozen families,
    as often as a Latin letter drawn by every family), still spread over its families as alpha says.

    The draws are a function of (seed, epoch), so every rank draws the same stream and Accelerate's batch
    sharding gives each rank its own share of it. A glyph drawn k times before in the epoch is yielded as
    `i + k * n` (n = dataset size): the dataset reads row `key % n` and seeds the augmentation with the key,
    so repeats are augmented differently. Call `set_epoch(epoch)` before each epoch.
    """

    def __init__(self, families: Sequence, fonts: Sequence, alpha: float, seed: int = 0,
                 labels: Sequence | None = None, beta: float = 0.0):
        if alpha < 0 or beta < 0:
            raise ValueError(f"alpha and beta must be >= 0, got {alpha}, {beta}")
        families, fonts = np.asarray(families, dtype=object), np.asarray(fonts, dtype=object)
        fonts_per_family = {}
        for family, font in set(zip(families.tolist(), fonts.tolist())):
            fonts_per_family[family] = fonts_per_family.get(family, 0) + 1
        weights = np.array([fonts_per_family[f] for f in families.tolist()], dtype=np.float64) ** -alpha
        if beta:
            if labels is None or len(labels) != len(weights):
                raise ValueError("beta > 0 needs one label per glyph")
            _, label_of = np.unique(np.asarray(labels), return_inverse=True)
            weights /= np.bincount(label_of, weights=weights)[label_of] ** beta
        self.p = weights / weights.sum()
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.p)

    def keys(self, epoch: int) -> np.ndarray:
        n = len(self.p)
        rows = np.random.default_rng([self.seed, epoch]).choice(n, size=n, p=self.p)
        order = np.argsort(rows, kind="stable")  # the k-th draw of a row (in draw order) gets key row + k·n
        sorted_rows = rows[order]
        starts = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1]])
        repeat = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
        keys = np.empty(n, dtype=np.int64)
        keys[order] = sorted_rows + repeat * n
        return keys

    def __iter__(self) -> Iterator[int]:
        yield from self.keys(self.epoch).tolist()
