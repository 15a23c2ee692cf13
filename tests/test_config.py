"""Flags: the old guide's command lines parse, YAML + CLI precedence, and flags that would do nothing are refused."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from glyph_train.errors import GlyphTrainError
from glyph_train.training.config import TrainConfig, parse_config

# ../shared/seed/QUICK_FIX_GUIDE.md, with `python -m raster.train` replaced by `accelerate launch -m glyph_train.train`
QUICK_TEST = """--db dataset/glyphs.db --limit 10000 --epochs 10 --batch-size 256 --val-frac 0.1 --num-workers 2
  --pre-rasterize --min-label-count 2 --drop-singletons --lr-backbone 0.0015 --lr-head 0.0030
  --weight-decay 0.01 --warmup-frac 0.05 --lr-schedule constant --retrieval-cap 1000 --retrieval-every 2
  --log-interval 50 --suppress-warnings"""
VALIDATION_100K = """--db dataset/glyphs.db --limit 100000 --epochs 15 --batch-size 512 --val-frac 0.1 --num-workers 2
  --pre-rasterize --min-label-count 2 --drop-singletons --lr-backbone 0.0015 --lr-head 0.0030
  --weight-decay 0.01 --warmup-frac 0.05 --lr-schedule constant --grad-clip 0.0 --arcface-margin 0.0
  --retrieval-cap 3000 --retrieval-every 2 --log-interval 100 --suppress-warnings"""


def test_guide_quick_test_command_parses() -> None:
    cfg = parse_config(shlex.split(QUICK_TEST))
    assert (cfg.limit, cfg.epochs, cfg.batch_size, cfg.retrieval_cap, cfg.lr_schedule) == (10000, 10, 256, 1000, "constant")
    assert cfg.min_label_count == 2 and cfg.drop_singletons and cfg.suppress_warnings and cfg.pre_rasterize


def test_guide_100k_command_parses() -> None:
    cfg = parse_config(shlex.split(VALIDATION_100K))
    assert (cfg.limit, cfg.grad_clip, cfg.arcface_margin, cfg.retrieval_every) == (100000, 0.0, 0.0, 2)


def test_drop_singletons_raises_min_count() -> None:
    assert parse_config(["--db", "x.db", "--drop-singletons"]).min_label_count == 2


def test_yaml_then_cli_precedence(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("db: a.db\nepochs: 3\nlr-head: 0.01\n")
    cfg = parse_config(["--config", str(path), "--epochs", "5"])
    assert (cfg.db, cfg.epochs, cfg.lr_head) == ("a.db", 5, 0.01)


def test_unknown_yaml_key_is_named(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("db: a.db\nlearning_rate: 0.1\n")
    with pytest.raises(GlyphTrainError, match="learning_rate"):
        parse_config(["--config", str(path)])


def test_no_data_source_is_an_error() -> None:
    with pytest.raises(GlyphTrainError, match="--db"):
        TrainConfig()


def test_cache_flags_with_prepared_data_are_refused() -> None:
    with pytest.raises(GlyphTrainError, match="--limit"):
        parse_config(["--data", "cache", "--limit", "10"])


def test_no_pre_rasterize_is_refused() -> None:
    with pytest.raises(GlyphTrainError, match="pre-rasterize"):
        parse_config(["--db", "x.db", "--no-pre-rasterize"])


def test_batch_must_divide_into_classes() -> None:
    with pytest.raises(GlyphTrainError, match="classes-per-batch"):
        parse_config(["--db", "x.db", "--batch-size", "10", "--classes-per-batch", "4"])


def test_out_dir_expands_environment(monkeypatch) -> None:
    monkeypatch.setenv("WANDB_RUN_ID", "abc123")
    assert parse_config(["--db", "x.db", "--out-dir", "runs/$WANDB_RUN_ID"]).out_dir == "runs/abc123"


def test_yaml_values_are_checked_against_choices(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("db: a.db\nbest_metric: accuracy\n")
    with pytest.raises(GlyphTrainError, match="best_metric"):
        parse_config(["--config", str(path)])


def test_the_shipped_recipe_parses_with_every_key_a_flag() -> None:
    # launch/recipe.yaml is what the quickstart trains and bench_unseen scores: a key the trainer does not
    # know, or a value outside a flag's choices, would stop the README's main job after the corpus build.
    recipe = Path(__file__).resolve().parents[1] / "launch" / "recipe.yaml"
    cfg = parse_config(["--config", str(recipe), "--db", "glyphs.db"])
    assert (cfg.fit, cfg.family_balance, cfg.img_size) == ("tight+origin", 1.0, 64)
    assert Path(cfg.labels).name == "core_labels.txt"
