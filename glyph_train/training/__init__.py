"""The pieces of training; the loop itself is `glyph_train/train.py`, so that `accelerate launch -m
glyph_train.train` reads as it always has.

    config.py       every training flag in one dataclass, filled by the CLI, YAML files and sweeps
    data.py         the prepared cache as torch Datasets, and the loaders
    augment.py      domain-safe augmentation, a pure function of (seed, epoch, sample index)
    samplers.py     class-balanced batches for SupCon
    losses.py       supervised contrastive loss and the cross-process gather it needs
    schedule.py     warmup then constant or cosine LR, a pure function of the optimizer step
    checkpoint.py   atomic checkpoints, resume, the run directory's claim
    tracking.py     metrics.jsonl and W&B
    distributed.py  the process group through Accelerate, and the guard against silent single-process launches
"""
