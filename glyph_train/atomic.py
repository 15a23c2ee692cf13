"""Replace a directory as a whole: readers see the old one or the new one, never a half-written mix."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from glyph_train.errors import GlyphTrainError


def replace_dir(new: Path, target: Path, owned: Callable[[Path], list[str]] | None = None) -> None:
    """Move the finished directory `new` to `target` (same filesystem). An existing `target` is renamed
    aside first and removed only once `new` is in place; if that rename fails, it is put back.

    `owned(target)` lists what in `target` glyph-train did not write; when it lists anything, nothing is
    moved or removed and the user gets one line instead."""
    if not target.exists():
        os.rename(new, target)
        return
    foreign = owned(target) if owned else []
    if foreign:
        raise GlyphTrainError(f"{target} holds files glyph-train did not write ({', '.join(foreign[:3])}"
                              f"{', ...' if len(foreign) > 3 else ''}); move them out or choose another output")
    old = target.parent / f".{target.name}.old-{os.getpid()}"  # the pid lets prepare clean up after a kill
    shutil.rmtree(old, ignore_errors=True)
    os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
