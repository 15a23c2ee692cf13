"""Checkpoints through Accelerate's save_state, made atomic, plus the best-model export.

A checkpoint is written to `checkpoints/.tmp-step_N` and renamed to `checkpoints/step_N` only when every
process has finished writing, so a crash (or kill -9) never leaves a half-written checkpoint that
`--resume auto` could pick up.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator

from glyph_train.atomic import replace_dir
from glyph_train.errors import GlyphTrainError

KEEP_LAST = 2


@dataclass
class TrainState:
    """Loop position, saved with every checkpoint (Accelerate's register_for_checkpointing)."""

    epoch: int = 0
    step: int = 0  # optimizer steps
    batch_in_epoch: int = 0  # batches consumed in `epoch`, skipped on resume
    best: float = -math.inf

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, values: dict) -> None:
        for key, value in values.items():
            setattr(self, key, value)


class Checkpointer:
    def __init__(self, accelerator: Accelerator, model: torch.nn.Module, out_dir: Path, state: TrainState) -> None:
        self.accelerator = accelerator
        self.model = model
        self.dir = out_dir / "checkpoints"
        self.best_dir = out_dir / "best"
        self.state = state
        accelerator.register_for_checkpointing(state)

    def save(self) -> Path:
        acc = self.accelerator
        if not all(bool(p.isfinite().all()) for p in self.model.parameters()):
            raise GlyphTrainError(
                f"weights became NaN/inf at step {self.state.step}; not checkpointed, the last good checkpoint is "
                f"kept in {self.dir}; lower --lr-backbone/--lr-head or set --grad-clip")
        final = self.dir / f"step_{self.state.step:08d}"
        tmp = self.dir / f".tmp-{final.name}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            (tmp / "train_state.json").write_text(json.dumps(self.state.state_dict()))
            replace_dir(tmp, final)
            for old in sorted(self.dir.glob("step_*"))[:-KEEP_LAST]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def load(self, where: str) -> None:
        path = self.latest() if where == "auto" else Path(where)
        if path is None:
            self.accelerator.print(f"--resume auto: no checkpoint in {self.dir}, starting fresh")
            return
        if not (path / "train_state.json").is_file():
            raise GlyphTrainError(f"{path} is not a complete checkpoint (no train_state.json); "
                                  f"pass a checkpoints/step_* directory or --resume auto")
        self.accelerator.load_state(str(path))

    def latest(self) -> Path | None:
        done = sorted(p for p in self.dir.glob("step_*") if (p / "train_state.json").is_file())
        return done[-1] if done else None

    def update_best(self, value: float | None, export: Callable[[Path], None]) -> bool:
        """Export the model to out_dir/best when `value` beats the best so far (NaN never does)."""
        if value is None or not value > self.state.best:
            return False
        self.state.best = float(value)
        if self.accelerator.is_main_process:
            export(self.best_dir)
        return True
