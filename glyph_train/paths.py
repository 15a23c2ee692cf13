"""Where glyph-train may write: never over one of a command's own inputs, and a default cache folder.

Every command that writes calls `check_outputs` before it does any work, so a mistyped `--out` costs a
one-line error instead of the user's glyphs.db.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Union

from glyph_train.errors import GlyphTrainError


PathArg = Union[str, Path, None]


def check_outputs(outputs: Mapping[str, PathArg], inputs: Mapping[str, PathArg | Iterable[PathArg]]) -> None:
    """Refuse when an output (flag -> path) is an input, holds one (an output directory), or lies inside an
    input directory. An input flag may name several paths; symlinks and hard links are seen through; None
    entries are ignored."""
    sources = [(flag, src) for flag, value in inputs.items()
               for src in ([value] if value is None or isinstance(value, (str, Path)) else value)]
    for out_flag, out in outputs.items():
        if out is None:
            continue
        out_real = Path(os.path.realpath(out))
        for in_flag, src in sources:
            if src is None:
                continue
            in_real = Path(os.path.realpath(src))
            if out_real == in_real or _same_file(out_real, in_real):
                raise GlyphTrainError(f"{out_flag} {out} is the {in_flag} input ({src}); glyph-train never "
                                      f"writes over its inputs: choose another {out_flag}")
            if in_real.is_relative_to(out_real):
                raise GlyphTrainError(f"{out_flag} {out} holds the {in_flag} input {src}; writing there could "
                                      f"remove it: choose another {out_flag} or move the input out")
            if out_real.is_relative_to(in_real):
                raise GlyphTrainError(f"{out_flag} {out} lies inside the {in_flag} input {src}; "
                                      f"choose another {out_flag}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:  # one of them does not exist yet
        return False


def existing_file(path: str | Path | None) -> Path | None:
    """`path` if it names an existing file (e.g. `--labels FILE` as opposed to a comma list), else None."""
    return Path(path) if path and Path(path).is_file() else None


def default_cache_dir() -> Path:
    """$GLYPH_TRAIN_CACHE, else $XDG_CACHE_HOME/glyph-train, else ~/.cache/glyph-train (as HF datasets does)."""
    if os.environ.get("GLYPH_TRAIN_CACHE"):
        return Path(os.environ["GLYPH_TRAIN_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "glyph-train"
