"""The multi-process CPU trap: a launch that asked for N processes but starts one must refuse to train."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _launch(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    env.pop("GLYPH_TRAIN_NUM_PROCESSES", None)
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cpu_flag_launch_that_starts_one_process_is_refused(tmp_path: Path) -> None:
    # `accelerate launch --cpu --num_processes 2` silently starts ONE process
    res = _launch("--cpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                  "--dynamo_backend", "no", "-m", "glyph_train.train", "--db", str(tmp_path / "none.db"),
                  "--wandb-mode", "disabled", tmp_path=tmp_path)
    assert res.returncode != 0, res.stderr[-2000:]  # the child exits 2; accelerate launch reports 1
    assert "glyph-train train: error: the launch asked for 2 processes but this run sees 1" in res.stderr


def test_explicit_expectation_is_enforced(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "glyph_train.train", "--db", str(tmp_path / "none.db"),
                          "--num-processes", "4", "--wandb-mode", "disabled"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 2
    assert "asked for 4 processes but this run sees 1" in res.stderr
    assert "Traceback" not in res.stderr
