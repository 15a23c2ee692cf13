"""Checkpoints through Accelerate's save_state, made atomic, plus the best-model export.

A checkpoint is written to `checkpoints/.tmp-step_N` and renamed to `checkpoints/step_N` only when every
process has finished writing, so a crash (or kill -9) never leaves a half-written checkpoint that
`--resume auto` could pick up. A checkpoint damaged afterwards (a truncated copy, a full disk) is found by
`checkpoint_problem` before loading: `--resume auto` falls back to the newest good one and says so.

A run directory holds one run: `claim_run_dir` refuses a non-empty one unless the run resumes from its own
checkpoints, or `--overwrite` moves the old run aside.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import struct
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

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
        if where == "auto":
            path = self.latest()
            if path is None:
                self.accelerator.print(f"--resume auto: no checkpoint in {self.dir}, starting fresh")
                return
        else:
            path = Path(where)
            problem = checkpoint_problem(path)
            if problem:
                raise GlyphTrainError(f"--resume {path}: not a usable checkpoint ({problem}); pass another "
                                      f"checkpoints/step_* directory or --resume auto")
        try:
            self.accelerator.load_state(str(path))
        except (RuntimeError, ValueError, KeyError, OSError, EOFError, pickle.UnpicklingError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise GlyphTrainError(f"cannot resume from {path} ({first}); was it saved with another --model, --compile or "
                                  f"other data? Resume with the run's own settings") from None

    def latest(self) -> Path | None:
        """The newest checkpoint that passes `checkpoint_problem`; damaged newer ones are named, not used."""
        damaged = []
        for path in sorted(self.dir.glob("step_*"), reverse=True):
            problem = checkpoint_problem(path)
            if problem is None:
                if damaged:
                    self.accelerator.print(f"--resume auto: skipped damaged checkpoint(s) {'; '.join(damaged)}; "
                                           f"resuming from {path.name}")
                return path
            damaged.append(f"{path.name} ({problem})")
        if damaged:
            raise GlyphTrainError(f"--resume auto: no usable checkpoint in {self.dir}: {'; '.join(damaged)}; "
                                  "start afresh with --overwrite instead of --resume")
        return None

    def update_best(self, value: float | None, export: Callable[[Path], None]) -> bool:
        """Export the model to out_dir/best when `value` beats the best so far (NaN never does)."""
        if value is None or not value > self.state.best:
            return False
        self.state.best = float(value)
        if self.accelerator.is_main_process:
            export(self.best_dir)
        return True


def checkpoint_problem(path: Path) -> str | None:
    """Why `path` cannot be resumed from, or None. Cheap checks that catch a missing or truncated file
    without loading the tensors: train_state.json parses, every safetensors file is as long as its header
    says, every torch file's zip directory is intact and its members lie within the file."""
    if not path.is_dir():
        return "no such directory"
    try:
        state = json.loads((path / "train_state.json").read_text())
    except FileNotFoundError:
        return "no train_state.json: incomplete"
    except (OSError, ValueError) as err:
        return f"train_state.json unreadable: {err}"
    if not isinstance(state, dict) or not {"epoch", "step"} <= set(state):
        return "train_state.json lacks epoch/step"
    files = sorted(p for p in path.iterdir() if p.is_file())
    if not any(p.suffix == ".safetensors" or p.name.startswith("pytorch_model") for p in files):
        return "no model weights"
    for p in files:
        if p.suffix == ".safetensors":
            problem = _safetensors_problem(p)
        elif p.suffix in (".bin", ".pkl", ".pt", ".pth"):
            problem = _torch_file_problem(p)
        else:
            continue
        if problem:
            return f"{p.name} {problem}"
    return None


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size:
                return "is truncated"
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error) as err:
        return f"is unreadable ({type(err).__name__})"
    return None if size == 8 + n + end else f"is {size:,} bytes, its header says {8 + n + end:,}: truncated"


def _torch_file_problem(path: Path) -> str | None:
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (OSError, zipfile.BadZipFile, ValueError) as err:
        return f"is truncated or not a torch file ({err})"
    if any(i.header_offset + i.compress_size > size for i in infos):
        return "is truncated"
    return None


def claim_run_dir(accelerator: Accelerator, out_dir: Path, resume: str | None, overwrite: bool) -> None:
    """Make `out_dir` this run's own, deciding on the main process (every process gets its verdict). An
    empty or missing folder is taken; a run resuming its own checkpoints continues; `overwrite` renames the
    old run to OUT_DIR.old-TIMESTAMP; otherwise one line refuses, since checkpoints of two runs side by
    side make `--resume auto` pick the wrong one."""
    verdict: list = [None]
    if accelerator.is_main_process:
        try:
            verdict[0] = _claim(out_dir, resume, overwrite)
        except GlyphTrainError as err:
            verdict[0] = err
    broadcast_object_list(verdict)
    if isinstance(verdict[0], GlyphTrainError):
        raise verdict[0]
    if verdict[0]:
        accelerator.print(verdict[0])


def _claim(out_dir: Path, resume: str | None, overwrite: bool) -> str | None:
    if out_dir.exists() and not out_dir.is_dir():
        raise GlyphTrainError(f"--out-dir {out_dir} is a file; choose a folder for the run")
    entries = sorted(p.name for p in out_dir.iterdir()) if out_dir.exists() else []
    if not entries:
        return None
    if resume == "auto" or resume and Path(os.path.realpath(resume)).is_relative_to(os.path.realpath(out_dir)):
        return None
    if not overwrite:
        listed = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise GlyphTrainError(f"--out-dir {out_dir} already holds a run ({listed}); continue it with --resume "
                              f"auto, start afresh with --overwrite (the old run is moved aside), or choose "
                              f"another --out-dir")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = out_dir.with_name(f"{out_dir.name}.old-{stamp}")
    n = 1
    while aside.exists():
        aside, n = out_dir.with_name(f"{out_dir.name}.old-{stamp}-{n}"), n + 1
    os.rename(out_dir, aside)
    return f"--overwrite: moved the previous run in {out_dir} aside to {aside}"
