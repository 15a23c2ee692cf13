"""Where a command writes: checked before any work starts, and named when a write fails anyway.

Each command checks the paths it will write (cache, run directory, sheet, DB) with `check_output_dir` /
`check_output_file`: a path under a file, a file where a folder is needed (or the reverse), a read-only
filesystem or a folder without write permission is refused at once, in one line. The checks also remember
each path, so that a write failing later (the disk filling up, a filesystem remounted read-only) becomes
one line naming that output (`write_error_line`, called by `cli.main`), even when the library that failed
(pyarrow, safetensors, SQLite, torch) did not say which file it was writing.

Root passes permission checks, but not a read-only filesystem: `os.access` reports EROFS for root too.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sqlite3
from pathlib import Path

from glyph_train.errors import GlyphTrainError

_declared: dict[Path, str | None] = {}  # output path -> the flag that set it (None: unknown)

# An output filesystem with less free space than this after a failed write is taken to be why it failed
# (torch.save reports a full disk only as "unexpected pos ..." with no errno).
NEARLY_FULL_BYTES = 1 << 20


def reset() -> None:
    """Forget the outputs of an earlier command run in this process (tests call cli.main repeatedly)."""
    _declared.clear()


def declare(path: str | os.PathLike, flag: str) -> None:
    """Remember that the user set output `path` with `flag`, so that messages about it name the flag."""
    _declared[Path(path)] = flag


def check_output_dir(path: str | os.PathLike, flag: str | None = None, writable: bool = True) -> Path:
    """`path` is a folder this command will create or write into (with writable=False: may read from, e.g. a
    cache that might be reused as it is; only a file in the way is refused)."""
    path = Path(path)
    flag = flag or _declared.get(path)
    if path.exists() and not path.is_dir():
        raise GlyphTrainError(f"{path} is a file, but {_flag(flag)} must be a folder; {_choose(flag)}")
    folder = path if path.is_dir() else _existing_ancestor(path, flag)
    if writable:
        _check_folder(folder, path, flag)
    _declare(path, flag)
    return path


def check_output_file(path: str | os.PathLike, flag: str | None = None) -> Path:
    """`path` is a file this command will create or replace; its folder must take new files (temp files,
    SQLite's journal)."""
    path = Path(path)
    flag = flag or _declared.get(path)
    if path.is_dir():
        raise GlyphTrainError(f"{path} is a folder, but {_flag(flag)} must be a file name; {_choose(flag)}")
    _check_folder(_existing_ancestor(path, flag), path, flag)
    if path.exists() and not os.access(path, os.W_OK):
        raise GlyphTrainError(f"{path}: this file is not writable ({_unwritable_reason(path)}); {_choose(flag)}")
    _declare(path, flag)
    return path


def check_free_space(path: str | os.PathLike, need: int, what: str, advice: str) -> None:
    """Refuse to start writing `need` bytes at `path` when its filesystem has less free space."""
    path = Path(path)
    free = shutil.disk_usage(_nearest_folder(path)).free
    if need > free:
        raise GlyphTrainError(f"{path}: {what} needs about {format_bytes(need)} but only {format_bytes(free)} "
                              f"is free on that filesystem; {advice}")


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # unreachable


# ------------------------------------------------------------------------------------ failures while writing


def write_error_line(err: BaseException) -> str | None:
    """One line for an exception caused by where the command writes (or reads) files, else None.

    Understood: OSErrors with an errno (also when pyarrow, safetensors or PIL wrap them), SQLite's "disk is
    full" and "readonly database", and any error raised while a declared output's filesystem is nearly full.
    """
    code, filename = _errno_and_filename(err)
    guessed = code is None
    if guessed:
        full = [p for p in _declared if (free := _free(p)) is not None and free < NEARLY_FULL_BYTES]
        if not full:
            return None
        code, filename = errno.ENOSPC, str(full[0])
    path, flag = _output_for(filename, code)
    if path is None:
        return None  # an errno, but no idea which file: keep the traceback
    choose = _choose(flag)
    if code in (errno.ENOSPC, errno.EDQUOT):
        free = _free(path)
        what = "disk quota exceeded" if code == errno.EDQUOT else "no space left on the device"
        left = f" (now {format_bytes(free)} free)" if free is not None else ""
        cause = f" ({type(err).__name__}: {_first_line(err)})" if guessed else ""
        return f"{path}: {what}{left}{cause}; free some space there or {choose}"
    if code == errno.EROFS:
        return f"{path}: the filesystem is read-only; {choose}"
    if not _is_output(path):  # e.g. a font or DB the command reads
        return f"{path}: {os.strerror(code)}; check the path and its permissions"
    if code in (errno.EACCES, errno.EPERM):
        return f"{path}: permission denied; {choose} in a folder you can write to"
    if code == errno.ENOTDIR:
        return f"{path}: part of this path is a file, not a folder; {choose}"
    if code == errno.EISDIR:
        return f"{path} is a folder where a file was expected; {choose}"
    if code == errno.EEXIST:
        return f"{path}: a file is in the way where a folder is needed; {choose}"
    if code == errno.EFBIG:
        return f"{path}: file too large for this filesystem or the file size limit (ulimit -f); {choose}"
    return None


_HANDLED = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR,
            errno.EEXIST, errno.EFBIG}
# Libraries that wrap the OS error keep only its text: pyarrow "[errno 28]", safetensors/Rust "(os error 28)".
_ERRNO_TEXT = re.compile(r"(?:\[errno|os error)\s+(\d+)", re.IGNORECASE)
_SQLITE = {"SQLITE_FULL": errno.ENOSPC, "SQLITE_READONLY": errno.EROFS}


def _errno_and_filename(err: BaseException) -> tuple[int | None, str | None]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:  # the error and what caused it
        seen.add(id(err))
        code = None
        if isinstance(err, OSError) and err.errno in _HANDLED:
            code = err.errno
        elif isinstance(err, sqlite3.Error):
            name = getattr(err, "sqlite_errorname", "") or ""
            code = next((c for prefix, c in _SQLITE.items() if name.startswith(prefix)), None)
        else:
            match = _ERRNO_TEXT.search(str(err))
            code = int(match.group(1)) if match and int(match.group(1)) in _HANDLED else None
        if code is not None:
            filename = err.filename if isinstance(err, OSError) else None
            return code, os.fsdecode(filename) if filename is not None else None
        err = err.__cause__ or err.__context__
    return None, None


def _output_for(filename: str | None, code: int) -> tuple[str | None, str | None]:
    """The declared output a failing file belongs to (itself, a file inside it, or a temp sibling such as
    `.NAME.tmp-123/...` or SQLite's `NAME-journal`), else the file itself. With no file name: the only
    declared output, else the one on the fullest (ENOSPC) or a read-only (EROFS) filesystem."""
    if filename is None:
        candidates = list(_declared)
        if len(candidates) > 1 and code in (errno.ENOSPC, errno.EDQUOT):
            candidates = sorted(candidates, key=lambda p: _free(p) or 0)[:1]
        elif len(candidates) > 1 and code == errno.EROFS:
            candidates = [p for p in candidates if _unwritable_reason(_nearest_folder(p)) == "read-only filesystem"]
        if len(candidates) == 1:
            return str(candidates[0]), _declared[candidates[0]]
        return None, None
    failed = Path(os.path.abspath(filename))
    for path, flag in _declared.items():
        out = Path(os.path.abspath(path))
        if any(p == out or (p.parent == out.parent and out.name in p.name) for p in (failed, *failed.parents)):
            return str(path), flag
    return filename, None


def _is_output(path: str) -> bool:
    return Path(path) in _declared


def _declare(path: Path, flag: str | None) -> None:
    if _declared.get(path) is None:
        _declared[path] = flag


def _existing_ancestor(path: Path, flag: str | None) -> Path:
    """The nearest folder above `path` that exists; refuses a file in the way."""
    for parent in Path(os.path.abspath(path)).parents:
        if parent.is_dir():
            return parent
        if parent.exists():
            raise GlyphTrainError(f"{path}: {parent} is a file, so nothing can be created under it; {_choose(flag)}")
    raise AssertionError("the root folder always exists")


def _check_folder(folder: Path, path: Path, flag: str | None) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        raise GlyphTrainError(f"{path}: cannot write in {folder} ({_unwritable_reason(folder)}); {_choose(flag)}")


def _unwritable_reason(path: Path) -> str:
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "read-only filesystem"
    except OSError:
        pass
    return "no write permission"


def _nearest_folder(path: Path) -> Path:
    return path if path.is_dir() else _existing_ancestor(path, None)


def _free(path: str | os.PathLike) -> int | None:
    try:
        return shutil.disk_usage(_nearest_folder(Path(path))).free
    except (OSError, GlyphTrainError):
        return None


def _flag(flag: str | None) -> str:
    return flag or "this output"


def _choose(flag: str | None) -> str:
    return f"choose another {flag}" if flag else "write it somewhere else"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:160] if text else "no message"
