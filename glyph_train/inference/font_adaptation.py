"""Test-time adaptation to one font (label-font --adapt-steps N): a copy of the model fine-tuned on the font's
own confidently labelled glyphs, whose probabilities for every glyph are then averaged with the model's.

A font far from the training styles (Kufic, Ruqaa, Nastaliq, handwriting) is read worse than one near them, yet
the glyphs the model is already sure of show how that font draws: a few steps of training's loss on them, with
their assigned labels and under training's augmentation, move the network toward the font's style, and its
other glyphs are read better. On the held-out fonts (BENCHMARKS.md §14p), with three exports, 20 steps gain
+0.2 to +0.5 points of Latin and +0.4 to +1.0 of Arabic joint accuracy, most of it in the fonts furthest from
training (Kufam, Noto Nastaliq, Lalezar, Lemonada, El Messiri), for 1.8 times label-font's time: off by default.

BatchNorm statistics and dropout stay frozen (eval mode): a few hundred glyphs of one font are no statistics to
trust (test-time BN statistics cost 1.2 points of Latin, §14g). The copy is the caller's; the export's model
is never changed.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from glyph_train.flags import Flag, non_negative_int
from glyph_train.training.augment import AugmentParams, augment_batch

ADAPT_STEPS_FLAG = Flag("--adapt-steps", "fine-tune a copy of the model for N steps on the font's own glyphs whose "
                        "label is confident and average its probabilities with the model's (test-time adaptation to "
                        "the font's style: 1.8 times the time; 0: off)",
                        0, type=non_negative_int, metavar="N")
# 20 steps at 5e-5 and 30 at 3e-5 measured alike; 1e-4, or pseudo-labels from 0.8, cost accuracy, and a second
# round of pseudo-labels from the adapted model added nothing (BENCHMARKS.md §14p).
LEARNING_RATE = 5e-5
BATCH = 64
PSEUDO_LABEL_CONFIDENCE = 0.9  # a glyph is trained on only when its assigned label is at least this likely
MIN_PSEUDO_LABELS = 8  # fewer confident glyphs than this: too little to adapt to, the font is predicted as is
SEED = 0


def fine_tuned(model: nn.Module, images: np.ndarray, columns: np.ndarray, steps: int,
               augment: AugmentParams = AugmentParams(), label_smoothing: float = 0.1) -> nn.Module:
    """A copy of `model` after `steps` AdamW steps of cross-entropy on uint8 `images` ((N, S, S) or
    (N, C, S, S)) labelled with class `columns`, each batch augmented as in training. Batches and augmentation
    are drawn from SEED: the same font adapts the same every run."""
    if len(images) != len(columns):
        raise ValueError(f"{len(images)} images but {len(columns)} labels")
    tuned = copy.deepcopy(model)
    # train() also drops LeViT's eval-mode cache of attention biases, which would otherwise stay the old ones
    tuned.train()
    for module in tuned.modules():
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.Dropout)):
            module.eval()
    device = next(tuned.parameters()).device
    optimizer = torch.optim.AdamW(tuned.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
    x_all = torch.from_numpy(images if images.ndim == 4 else images[:, None])
    y_all = torch.as_tensor(columns, dtype=torch.long)
    rng = np.random.default_rng(SEED)
    with torch.enable_grad():
        for step in range(steps):
            batch = rng.choice(len(images), size=min(BATCH, len(images)), replace=False)
            x = augment_batch(x_all[batch], SEED, step, batch.tolist(), augment).to(device)
            loss = F.cross_entropy(tuned(x)["logits"].float(), y_all[batch].to(device), label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    tuned.eval()
    return tuned
