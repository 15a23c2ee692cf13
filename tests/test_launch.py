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


def test_the_test_command_stops_in_one_line_when_the_disk_is_full(tmp_path: Path) -> None:
    """A CI run on a nearly full disk failed 28 unrelated tests from deep inside. tests/run.sh now checks the
    room first (tests/check_disk.sh); here `df` reports 1 GB free."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "df").write_text("#!/bin/sh\necho 'Filesystem 1024-blocks Used Available Capacity Mounted'\n"
                             "echo '/dev/vda 264000000 263000000 1048576 99% /'\n")
    (fake / "df").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "tests/check_disk.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "only 1 GB free" in proc.stderr and "free some space" in proc.stderr
    assert subprocess.run(["bash", "tests/check_disk.sh"], cwd=REPO, capture_output=True, timeout=60).returncode == 0
    assert "bash tests/check_disk.sh" in (REPO / "tests" / "run.sh").read_text()
