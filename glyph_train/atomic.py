"""Replace a directory as a whole: readers see the old one or the new one, never a half-written mix."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def replace_dir(new: Path, target: Path) -> None:
    """Move the finished directory `new` to `target` (same filesystem). An existing `target` is renamed
    aside first and removed only once `new` is in place; if that rename fails, it is put back."""
    if not target.exists():
        os.rename(new, target)
        return
    old = target.parent / f".{target.name}.old-{os.getpid()}"  # the pid lets prepare clean up after a kill
    shutil.rmtree(old, ignore_errors=True)
    os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
