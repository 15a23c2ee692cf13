"""Augmentation follows the epoch under N processes (issue 6 §2): Accelerate's loader.set_epoch does not reach
the dataset when its sampler slot holds a SeedableRandomSampler, so the trainer sets it itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from glyph_train.cache.prepare import prepare
from glyph_train.cache.raster import RenderParams
from tests.dbfactory import write_db

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "_epoch_worker.py"


def run_worker(cache: Path, out: Path, processes: int, *worker_args: str) -> dict[int, dict[int, torch.Tensor]]:
    out.mkdir()
    launcher = [sys.executable]
    if processes > 1:
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                    str(REPO / "accelerate_configs/cpu_multiprocess.yaml"), "--num_processes", str(processes)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([*launcher, str(WORKER), str(cache), str(out), *worker_args], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    merged: dict[int, dict[int, torch.Tensor]] = {0: {}, 1: {}}
    for rank in range(processes):
        for epoch, images in torch.load(out / f"rank_{rank}.pt").items():
            assert not set(images) & set(merged[epoch]), "ranks must see disjoint samples"
            merged[epoch].update(images)
    return merged


def test_two_processes_augment_each_epoch_like_one_process(tmp_path: Path) -> None:
    write_db(tmp_path / "glyphs.db", latin="ABCDEFGH", arabic=())
    prepare(tmp_path / "glyphs.db", tmp_path / "cache", RenderParams(img_size=32), "font", 0.3, 0, 1)
    two = run_worker(tmp_path / "cache", tmp_path / "two", 2)
    one = run_worker(tmp_path / "cache", tmp_path / "one", 1)

    both_epochs = set(two[0]) & set(two[1])
    assert len(both_epochs) >= 8
    same = [i for i in both_epochs if torch.equal(two[0][i], two[1][i])]
    assert not same, f"{len(same)} of {len(both_epochs)} samples got epoch 0's augmentation again in epoch 1"
    for epoch in (0, 1):
        shared = set(two[epoch]) & set(one[epoch])
        assert len(shared) >= 8
        differ = [i for i in shared if not torch.equal(two[epoch][i], one[epoch][i])]
        assert not differ, f"epoch {epoch}: {len(differ)} samples augmented unlike the 1-process run"


def test_two_processes_draw_the_family_balanced_epoch_like_one_process(tmp_path: Path) -> None:
    """--family-balance: both ranks together draw exactly the one-process epoch (same keys, same images), repeats
    of a glyph within an epoch are augmented apart, and the next epoch draws and augments anew."""
    write_db(tmp_path / "glyphs.db", latin="ABCDEFGH", arabic=())  # Roboto and Lora in 2 fonts, Amiri and Inter in 1
    n = len(prepare(tmp_path / "glyphs.db", tmp_path / "cache", RenderParams(img_size=32), "font", 0.3, 0, 1).train)
    two = run_worker(tmp_path / "cache", tmp_path / "two", 2, "1")
    one = run_worker(tmp_path / "cache", tmp_path / "one", 1, "1")
    for epoch in (0, 1):
        assert set(two[epoch]) == set(one[epoch])
        differ = [k for k in one[epoch] if not torch.equal(two[epoch][k], one[epoch][k])]
        assert not differ, f"epoch {epoch}: {len(differ)} draws differ from the 1-process run"
    repeats = [k for k in one[0] if k >= n and k % n in one[0]]
    assert repeats and all(not torch.equal(one[0][k], one[0][k % n]) for k in repeats)
    assert set(one[0]) != set(one[1])
