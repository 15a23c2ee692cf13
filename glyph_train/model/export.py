"""The inference export: a directory holding everything needed to rebuild the trained model, nothing else.

    model.safetensors   weights (no optimizer, scheduler, RNG or Accelerate state)
    labels.json         label names in class-index order: logits[:, i] is labels[i]
    config.json         the resolved training config plus the architecture GlyphModel is rebuilt from, and
                        `temperature`: the softmax temperature fitted on the validation split
                        (evaluation/calibration.py; absent in older exports, read as 1)

Saving is atomic: the files are written and fsynced in a temporary directory beside the target, which then
takes the target's name by rename. A crash at any point leaves either the previous export or the new one
under that name, never a mix; at worst (between the two renames of a replacement) the previous complete
export sits beside it as `.NAME.old-*`, and `load_export` says so.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from glyph_train.atomic import replace_dir
from glyph_train.errors import GlyphTrainError
from glyph_train.flags import Flag
from glyph_train.model.network import GlyphModel

WEIGHTS, LABELS, CONFIG = "model.safetensors", "labels.json", "config.json"
EXPORT_FILES = (WEIGHTS, LABELS, CONFIG)
EXPORT_FORMAT = 1
# GlyphModel constructor arguments stored in config.json (pretrained is not: the weights are in the export)
CHECKPOINT_FLAG = Flag("--checkpoint", "an export directory (run_dir/export or run_dir/best)", type=Path,
                       metavar="EXPORT")
ARCHITECTURE_KEYS = ("model_name", "num_classes", "embedding_dim", "img_size", "arcface_margin", "arcface_scale", "dropout",
                     "in_chans")
ARCHITECTURE_DEFAULTS = {"in_chans": 1}  # keys older exports lack, and the value they were trained with


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The GlyphModel inside DDP (`.module`) or torch.compile (`._orig_mod`) wrappers."""
    while not isinstance(model, GlyphModel):
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(getattr(model, "module", None), torch.nn.Module):
            model = model.module
        else:
            break
    if not isinstance(model, GlyphModel):
        raise TypeError(f"save_export needs a GlyphModel, got {type(model).__name__}")
    return model


def export_config(model: GlyphModel, label_names: list[str], config: dict[str, Any],
                  temperature: float | None = None, other_prior_ratio: float | None = None) -> dict[str, Any]:
    """config.json's content: the training config, with the architecture taken from the model itself (the
    truth about the weights) so the export rebuilds even when the config names it differently."""
    arch = {key: model.config[key] for key in ARCHITECTURE_KEYS}
    if arch["num_classes"] != len(label_names):
        raise ValueError(f"model has {arch['num_classes']} classes but {len(label_names)} label names were given")
    extra = {"temperature": float(temperature)} if temperature is not None else {}
    if other_prior_ratio is not None:  # see evaluation/calibration.py
        extra["other_prior_ratio"] = float(other_prior_ratio)
    return {**config, **arch, **extra, "export_format": EXPORT_FORMAT}


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"config value of type {type(value).__name__} is not JSON serialisable")


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_export(out_dir: str | os.PathLike, model: torch.nn.Module, label_names: list[str], config: dict[str, Any],
                temperature: float | None = None, other_prior_ratio: float | None = None) -> None:
    """Write model.safetensors, labels.json and config.json to `out_dir` atomically (replacing a previous
    export there as a whole). On any error the temporary directory is removed and `out_dir` is untouched."""
    out_dir = Path(out_dir)
    model = _unwrap(model)
    label_names = [str(name) for name in label_names]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700: an export is meant to be read by others
    try:
        save_model(model, str(tmp / WEIGHTS), metadata={"format": "pt"})  # contiguous, shared tensors deduplicated
        _fsync(tmp / WEIGHTS)
        _write_text(tmp / LABELS, json.dumps(label_names, ensure_ascii=False, indent=0))
        _write_text(tmp / CONFIG, json.dumps(export_config(model, label_names, config, temperature,
                                                           other_prior_ratio), indent=2,
                                             default=_json_default))
        _fsync(tmp)
        replace_dir(tmp, out_dir)
        _fsync(out_dir.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_export(export_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[GlyphModel, list[str], dict[str, Any]]:
    """(GlyphModel in eval mode on `device`, label names in class order, config) from a `save_export` directory.

    Needs only the three files: no training code state, no Accelerate. Raises GlyphTrainError when the
    directory is missing, incomplete or does not match the architecture its config describes.
    """
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        hint = ""
        backups = sorted(export_dir.parent.glob(f".{export_dir.name}.old-*")) if export_dir.parent.is_dir() else []
        if backups:
            hint = f"; an interrupted save left the previous export at {backups[-1]}: rename it to {export_dir.name}"
        raise GlyphTrainError(f"{export_dir}: no export directory here (expected one written by glyph-train train, "
                              f"e.g. RUN_DIR/export or RUN_DIR/best){hint}")
    missing = [name for name in EXPORT_FILES if not (export_dir / name).is_file()]
    if missing:
        raise GlyphTrainError(f"{export_dir}: incomplete export, missing {', '.join(missing)}; "
                              f"point --checkpoint at a directory holding {', '.join(EXPORT_FILES)}")
    config = _read_json(export_dir / CONFIG, dict)
    label_names = _read_json(export_dir / LABELS, list)
    config = {**ARCHITECTURE_DEFAULTS, **config}
    absent = [key for key in ARCHITECTURE_KEYS if key not in config]
    if absent:
        raise GlyphTrainError(f"{export_dir / CONFIG}: missing {', '.join(absent)}; not a glyph-train export config")
    if len(label_names) != config["num_classes"]:
        raise GlyphTrainError(f"{export_dir / LABELS}: {len(label_names)} labels but config.json says "
                              f"num_classes={config['num_classes']}; the export is inconsistent, re-export it")

    try:
        model = GlyphModel(**{key: config[key] for key in ARCHITECTURE_KEYS}, pretrained=False)
    except RuntimeError as err:  # e.g. a timm name this timm version does not know
        raise GlyphTrainError(f"{export_dir / CONFIG}: cannot build model {config['model_name']!r}: {err}") from None
    try:
        missing_keys, unexpected = load_model(model, export_dir / WEIGHTS, strict=False, device=str(device))
    except (SafetensorError, OSError, RuntimeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GlyphTrainError(f"{export_dir / WEIGHTS}: unreadable or wrong shapes for {config['model_name']} "
                              f"({first_line}); re-export the model") from None
    if missing_keys or unexpected:
        raise GlyphTrainError(
            f"{export_dir / WEIGHTS}: weights do not match {config['model_name']} "
            f"(missing {len(missing_keys)}: {sorted(missing_keys)[:3]}, unexpected {len(unexpected)}: "
            f"{sorted(unexpected)[:3]}); was it exported with another timm version?")
    return model.to(device).eval(), [str(name) for name in label_names], config


def _read_json(path: Path, kind: type) -> Any:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GlyphTrainError(f"{path}: not valid JSON ({err}); the export is damaged, re-export it") from None
    if not isinstance(value, kind):
        raise GlyphTrainError(f"{path}: expected a JSON {kind.__name__}, got {type(value).__name__}")
    return value
