"""One definition of each flag: a flag that several commands take means the same in each of them.

Every subcommand's parser of `glyph-train` and the trainer's own (`python -m glyph_train.train`) are walked;
a flag two of them share must agree in kind (switch or value), type, choices, metavar, default and help.
The few that differ on purpose are listed below, each with its reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
from collections import defaultdict

import pytest
import yaml

from glyph_train import cli
from glyph_train.corpus.db import filter_from_args
from glyph_train.training import config

# (command, flag): the command's flag is its own, a different thing under the same name
OWN = {
    ("train", "--db"): "the corpus to train on, rendered into a cache; --data can replace it",
    ("glyph_train.train", "--db"): "as train",
    ("embed", "--db"): "an alternative to FONT|DIR arguments",
    ("train", "--batch-size"): "the training batch per process, not images per forward pass",
    ("label-font", "--checkpoint"): "one export or several, whose probabilities are averaged (an ensemble)",
    ("glyph_train.train", "--batch-size"): "as train",
}
EVERY_COMMAND_OWN = {"--out": "each command writes its own kind of output"}
# (command, flag): a variant of the shared flag (Flag.variant / Flag.field(default=...)): only its default,
# and the default its --help shows, differ
VARIANTS = {
    ("train", "--num-proc"): "training's default has always been 2 render processes (prepare: the CPUs)",
    ("glyph_train.train", "--num-proc"): "as train",
    ("evaluate", "--fit"): "an override: by default the fit the export was trained with",
    ("search", "--checkpoint"): "optional: by default the export the index was built with",
}
TRAINERS = ("train", "glyph_train.train")  # parsed values are None unless given (--config fills them)
_DEFAULT_SHOWN = re.compile(r" \(default: [^)]*\)$")


def parsers() -> dict[str, argparse.ArgumentParser]:
    out = {}
    for name, (module, _) in cli.SUBCOMMANDS.items():
        out[name] = argparse.ArgumentParser(prog=f"glyph-train {name}")
        importlib.import_module(module).add_arguments(out[name])
    out["glyph_train.train"] = _trainer()
    return out


def _trainer() -> argparse.ArgumentParser:
    """The parser parse_config builds (scripts, sweeps and tests fill TrainConfig through it)."""
    parser = argparse.ArgumentParser(prog="glyph_train.train")
    config.add_arguments(parser)
    return parser


def _spec(command: str, action: argparse.Action, variant: bool) -> dict:
    default = action.default
    if command in TRAINERS and action.dest in config.TrainConfig.__dataclass_fields__:
        default = config.TrainConfig.__dataclass_fields__[action.dest].default  # what the run uses
    help_text = action.help or ""
    spec = {"switch": action.nargs == 0, "type": action.type, "choices": action.choices, "metavar": action.metavar,
            "help": _DEFAULT_SHOWN.sub("", help_text) if variant else help_text}
    return spec if variant else {**spec, "default": default}


def test_a_shared_flag_is_the_same_in_every_command() -> None:
    found = parsers()
    by_flag: dict[str, dict[str, argparse.Action]] = defaultdict(dict)
    for command, parser in found.items():
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                by_flag[action.option_strings[0]][command] = action
    wrong = []
    for flag, actions in sorted(by_flag.items()):
        shared = {c: a for c, a in actions.items() if (c, flag) not in OWN and flag not in EVERY_COMMAND_OWN}
        if len(shared) < 2:
            continue
        first = next(c for c in shared if (c, flag) not in VARIANTS)
        for command, action in shared.items():
            variant = (command, flag) in VARIANTS
            want, got = _spec(first, shared[first], variant), _spec(command, action, variant)
            differ = {k: (want[k], got[k]) for k in want if want[k] != got[k]}
            if differ:
                wrong.append(f"{flag}: {command} differs from {first}: {differ}")
    assert not wrong, "\n".join(wrong)
    listed = {*OWN, *VARIANTS}
    stale = [f"{c} {f}" for c, f in listed if f not in by_flag or c not in by_flag[f]]
    assert not stale, f"listed exceptions no command has any more: {stale}"


def test_prepare_and_train_select_the_same_glyphs_from_the_same_flags(tmp_path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("65_isol\n# comment\n1576_init\n")
    flags = ["--limit", "50", "--seed", "3", "--exclude-shaped", "--min-label-count", "2", "--drop-singletons",
             "--char-classes", "latin, arabic,latin", "--labels", str(labels)]
    prepare = argparse.ArgumentParser()
    importlib.import_module("glyph_train.cache.prepare").add_arguments(prepare)
    from_prepare = filter_from_args(prepare.parse_args(["--db", "g.db", "--out", "c", *flags]))
    from_train = filter_from_args(config.parse_config(["--db", "g.db", *flags]))
    assert from_prepare == from_train
    assert from_train.char_classes == ("latin", "arabic") and from_train.labels == ("65_isol", "1576_init")


def test_shared_flags_keep_dataclass_defaults_below_yaml_below_command_line(tmp_path) -> None:
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({"db": "g.db", "img_size": 64, "exclude_shaped": True, "num_proc": 3,
                                   "char_classes": "latin"}))
    cfg = config.parse_config(["--config", str(run), "--no-exclude-shaped", "--fit=em", "--num-proc", "4"])
    assert (cfg.img_size, cfg.fit, cfg.exclude_shaped, cfg.num_proc, cfg.char_classes) == (64, "em", False, 4, "latin")
    assert (cfg.split, cfg.val_frac, cfg.seed, cfg.min_label_count) == ("font", 0.1, 0, 1)  # dataclass defaults
    with pytest.raises(config.GlyphTrainError, match="fit"):
        config.TrainConfig(db="g.db", fit="loose")  # a YAML value is checked against the shared choices


def test_help_shows_the_default_the_code_uses() -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(config.TrainConfig)}
    for action in _trainer()._actions:
        if action.dest in defaults and action.nargs != 0 and defaults[action.dest] is not None:
            assert action.help.endswith(f"(default: {defaults[action.dest]})"), action.option_strings
