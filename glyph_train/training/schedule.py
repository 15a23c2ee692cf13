"""LR schedule: linear warmup then constant or cosine, from timm, stepped per optimizer step.

`step_update(step)` is a pure function of the optimizer-step count, so the LR is right under N processes,
gradient accumulation and resume without saving any scheduler state.
"""

from __future__ import annotations

import math

import torch
from timm.scheduler import CosineLRScheduler, StepLRScheduler
from timm.scheduler.scheduler import Scheduler


def make_scheduler(optimizer: torch.optim.Optimizer, kind: str, total_steps: int, warmup_frac: float) -> Scheduler:
    warmup = int(round(warmup_frac * total_steps))
    common = dict(warmup_t=warmup, warmup_lr_init=0.0, t_in_epochs=False)
    if kind == "cosine":
        scheduler = CosineLRScheduler(optimizer, t_initial=max(1, total_steps), lr_min=0.0, **common)
    elif kind == "constant":  # a step schedule that never decays
        scheduler = StepLRScheduler(optimizer, decay_t=max(1, total_steps) + 1, decay_rate=1.0, **common)
    else:
        raise ValueError(f"unknown lr schedule {kind!r}")
    scheduler.step_update(0)
    return scheduler


def optimizer_steps(batches_per_epoch: int, grad_accum: int, epochs: int, max_steps: int = 0) -> int:
    """Optimizer steps of a run: Accelerate also steps on an epoch's last, partial accumulation (ceil, not
    floor), so a schedule sized with floor would reach its end early and train the last steps at LR 0."""
    total = math.ceil(batches_per_epoch / grad_accum) * epochs
    return min(total, max_steps) if max_steps else total
