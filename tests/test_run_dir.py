"""One run per run directory, checkpoints verified before resuming, and the default render cache (issue 6 §4).

Real in-process training runs of a tiny timm model (test_vit at 32 px) on a tiny DB of real outlines.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.dbfactory import write_db

MODEL = ["--model", "test_vit", "--img-size", "32", "--batch-size", "16", "--num-workers", "0", "--val-frac", "0.3",
         "--wandb-mode", "disabled", "--log-interval", "5"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("runs")
    write_db(path / "glyphs.db")
    return path


def cli_train(root: Path, out: str, *extra: str, cache: bool = True) -> int:
    """`glyph-train train` in this process (the CLI's exit code and one-line errors), state reset around it."""
    from accelerate.state import AcceleratorState

    from glyph_train.cli import main

    args = ["--db", str(root / "glyphs.db"), *MODEL, "--out-dir", str(root / out), *extra]
    if cache:
        args += ["--cache-dir", str(root / "cache")]
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        return main(["train", *args])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("glyph-train")]
    assert len(err) == 1, err
    return err[0]


def tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_used_run_dir_is_refused_and_overwrite_moves_the_old_run_aside(root, capsys):
    assert cli_train(root, "run", "--epochs", "1", "--max-steps", "3") == 0
    before = tree(root / "run")
    capsys.readouterr()
    assert cli_train(root, "run", "--epochs", "1", "--max-steps", "2") == 2
    assert "already holds a run" in one_line_error(capsys)
    assert tree(root / "run") == before  # not even config.yaml was rewritten

    assert cli_train(root, "run", "--epochs", "1", "--overwrite", "--resume", "auto") == 2
    assert "give only one" in one_line_error(capsys)

    assert cli_train(root, "run", "--epochs", "1", "--max-steps", "2", "--overwrite") == 0
    said = [line for line in capsys.readouterr().out.splitlines() if "aside" in line]
    aside = [p for p in root.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and len(said) == 1 and str(aside[0]) in said[0]
    assert tree(aside[0]) == before  # the old run, whole
    assert sorted(p.name for p in (root / "run" / "checkpoints").glob("step_*")) == ["step_00000002"]


@pytest.fixture(scope="module")
def checkpointed(root) -> Path:
    """A finished run with checkpoints at steps 3 and 6; tests work on copies."""
    assert cli_train(root, "checkpointed", "--epochs", "1", "--max-steps", "6", "--save-every", "3") == 0
    return root / "checkpointed"


def test_resume_auto_skips_a_truncated_checkpoint_and_an_explicit_one_is_one_line(checkpointed, root, capsys):
    shutil.copytree(checkpointed, root / "resumed")
    newest = root / "resumed" / "checkpoints" / "step_00000006"
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a disk that filled up
    config = root / "resumed" / "config.yaml"
    config_before = config.read_bytes(), config.stat().st_mtime_ns
    capsys.readouterr()

    assert cli_train(root, "resumed", "--epochs", "1", "--max-steps", "8", "--resume", str(newest)) == 2
    err = one_line_error(capsys)
    assert "not a usable checkpoint" in err and "model.safetensors" in err and "truncated" in err, err
    assert (config.read_bytes(), config.stat().st_mtime_ns) == config_before  # a failed resume leaves it

    assert cli_train(root, "resumed", "--epochs", "1", "--max-steps", "8", "--resume", "auto") == 0
    out = capsys.readouterr().out
    assert "skipped damaged checkpoint(s) step_00000006" in out and "resuming from step_00000003" in out, out
    assert "resumed at epoch 0, step 3" in out
    assert (root / "resumed" / "export" / "model.safetensors").is_file()


def test_checkpoint_problem_finds_truncated_torch_files_and_bad_state(checkpointed, tmp_path):
    from glyph_train.training.checkpoint import checkpoint_problem

    good = checkpointed / "checkpoints" / "step_00000006"
    assert checkpoint_problem(good) is None
    torch_files = sorted(p.name for p in good.iterdir() if p.suffix in (".bin", ".pkl"))
    assert "optimizer.bin" in torch_files
    for name in [*torch_files, "train_state.json", "model.safetensors"]:
        bad = tmp_path / f"bad-{name}"
        shutil.copytree(good, bad)
        data = (bad / name).read_bytes()
        (bad / name).write_bytes(data[: len(data) - 7] if name != "train_state.json" else b'{"epoch": ')
        assert name in checkpoint_problem(bad), name
    assert "no such directory" in checkpoint_problem(tmp_path / "nope")


def test_train_db_without_cache_dir_keeps_one_cache_per_setting_in_the_user_cache(root, tmp_path, monkeypatch):
    from glyph_train.cache.reader import load_prepared

    user_cache = tmp_path / "user-cache"
    monkeypatch.setenv("GLYPH_TRAIN_CACHE", str(user_cache))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert cli_train(root, "cache32", "--epochs", "1", "--max-steps", "1", cache=False) == 0
    first = sorted((user_cache / "prepared").iterdir())
    assert len(first) == 1 and load_prepared(first[0]).img_size == 32
    stamp = (first[0] / "prepare.json").stat().st_mtime_ns
    assert cli_train(root, "cache16", "--epochs", "1", "--max-steps", "1", "--img-size", "16", cache=False) == 0
    caches = sorted((user_cache / "prepared").iterdir())
    assert len(caches) == 2 and first[0] in caches  # the other setting's cache is still there, unchanged
    assert (first[0] / "prepare.json").stat().st_mtime_ns == stamp
    assert sorted(load_prepared(c).img_size for c in caches) == [16, 32]
    assert list(work.iterdir()) == []  # nothing in the working folder

    monkeypatch.delenv("GLYPH_TRAIN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    from glyph_train.outputs import default_cache_dir

    assert default_cache_dir() == tmp_path / "xdg" / "glyph-train"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "glyph-train"


def test_train_refuses_a_run_dir_holding_its_db_even_with_overwrite(root, capsys):
    before = (root / "glyphs.db").read_bytes()
    for extra in ([], ["--overwrite"]):
        capsys.readouterr()
        assert cli_train(root, ".", "--epochs", "1", "--max-steps", "1", *extra) == 2
        assert "holds the --db input" in one_line_error(capsys)
    assert (root / "glyphs.db").read_bytes() == before
    assert not [p for p in root.parent.iterdir() if ".old-" in p.name]
