"""One process of the augmentation-epoch test (tests/test_augment_epochs.py starts it, plainly or with
`accelerate launch` for 2 gloo processes).

    python tests/_epoch_worker.py CACHE_DIR OUT_DIR [FAMILY_BALANCE]

Shards the default (shuffled) training loader, or the family-balanced one when FAMILY_BALANCE is given, with Accelerate as the trainer does, iterates epochs 0 and 1
through `train.epoch_batches`, and writes this rank's {epoch: {sample index: augmented image}} to
OUT_DIR/rank_R.pt (keyed by the sampler's key: a family-balanced repeat has its own).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from accelerate.utils import set_seed

from glyph_train.train import epoch_batches
from glyph_train.training.checkpoint import TrainState
from glyph_train.training.config import TrainConfig
from glyph_train.training.data import make_loaders, open_training_data
from glyph_train.training.distributed import make_accelerator


def main(cache: str, out: str, family_balance: str = "0") -> None:
    torch.set_num_threads(1)
    cfg = TrainConfig(data=cache, batch_size=4, num_workers=0, family_balance=float(family_balance))
    accelerator = make_accelerator("no", 1, out, log_with=None)
    set_seed(cfg.seed)  # as the trainer does: Accelerate's seedable sampler starts from torch's initial seed
    train_loader, _, sampler = make_loaders(cfg, open_training_data(cfg, Path(cache)))
    train_loader = accelerator.prepare(train_loader)
    state, seen = TrainState(), {}
    for epoch in (0, 1):
        state.epoch = epoch
        seen[epoch] = {int(i): image for batch in epoch_batches(accelerator, train_loader, sampler, state)
                       for i, image in zip(batch["index"], batch["image"])}
    torch.save(seen, Path(out) / f"rank_{accelerator.process_index}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:])
