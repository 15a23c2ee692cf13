"""Run logging: a JSONL file that always exists, plus W&B through Accelerate's tracker on the main process.

W&B runs offline unless an API key is configured, so every run leaves a `wandb/offline-run-*` directory
that `wandb sync` can upload later; nothing blocks on the network.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np
from accelerate import Accelerator


def wandb_mode(requested: str) -> str:
    if requested != "auto":
        return requested
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def start_tracking(accelerator: Accelerator, project: str, run_name: str, out_dir: Path, config: dict, mode: str) -> None:
    """W&B on the main process only; the others log nothing."""
    if mode == "disabled" or not accelerator.is_main_process:
        return
    os.environ.setdefault("WANDB_SILENT", "true")
    accelerator.init_trackers(
        project, config=config,
        init_kwargs={"wandb": {"name": run_name, "mode": mode, "dir": str(out_dir), "resume": "allow",
                               "id": _stable_run_id(out_dir)}},
    )


def _stable_run_id(out_dir: Path) -> str:
    """Same id across --resume of one run directory, so W&B appends instead of starting a new run."""
    if os.environ.get("WANDB_RUN_ID"):  # set by a sweep agent for each trial
        return os.environ["WANDB_RUN_ID"]
    id_file = out_dir / "wandb_run_id"
    if not id_file.exists():
        id_file.write_text(secrets.token_hex(4))
    return id_file.read_text().strip()


class MetricsLog:
    """Append-only JSONL of everything logged, written by the main process only."""

    def __init__(self, accelerator: Accelerator, path: Path) -> None:
        self.accelerator = accelerator
        self.path = path
        self.start = time.time()

    def log(self, record: dict[str, Any], step: int) -> None:
        if not self.accelerator.is_main_process:
            return
        record = {"step": step, "time": round(time.time() - self.start, 3), **json_safe(record)}
        with self.path.open("a") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")
        flat = {k: v for k, v in _flatten(record).items() if isinstance(v, (int, float))}
        self.accelerator.log(flat, step=step)

    def log_images(self, key: str, image: np.ndarray, caption: str, step: int) -> None:
        if not self.accelerator.is_main_process or not self.accelerator.trackers:
            return
        import wandb

        self.accelerator.log({key: wandb.Image(image, caption=caption)}, step=step)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[prefix + k] = v
    return out


def json_safe(value: Any) -> Any:
    """numpy scalars and tensors to Python numbers, NaN/inf (undefined metrics) to None: strict JSON, null."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
