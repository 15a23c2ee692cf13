"""Run one function in a fresh spawned process with a time limit: fontTools and HarfBuzz read uploaded
(untrusted) fonts there, so a font that hangs, exhausts memory or crashes the parser costs one process,
never the server. The function's GlyphTrainError (or any other error) comes back as a one-line message."""

from __future__ import annotations

import multiprocessing as mp
import threading
from typing import Any, Callable

from glyph_train.errors import GlyphTrainError

_SPAWN = mp.get_context("spawn")  # no fork: the server has threads and possibly torch state
_ONE_AT_A_TIME = threading.Semaphore(1)  # a 2-core box labels one font at a time; others wait their turn


def _child(conn, fn: Callable, args: tuple) -> None:
    try:
        conn.send(("ok", fn(*args)))
    except GlyphTrainError as err:  # already names the file and what is wrong
        conn.send(("user", str(err)))
    except BaseException as err:  # anything the parser raises on a damaged font, reported as one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        conn.send(("error", f"{type(err).__name__}: {first}" if first else type(err).__name__))
    finally:
        conn.close()


def run_isolated(fn: Callable, args: tuple, timeout: float, what: str,
                 on_start: Callable[[], None] | None = None) -> Any:
    """fn(*args) in a spawned process (one at a time; `on_start` runs when this one's turn comes); raises
    GlyphTrainError on the function's error, a crash or the timeout, naming `what` where fn's message cannot."""
    with _ONE_AT_A_TIME:
        if on_start is not None:
            on_start()
        receive, send = _SPAWN.Pipe(duplex=False)
        proc = _SPAWN.Process(target=_child, args=(send, fn, args), daemon=True)
        proc.start()
        send.close()
        try:
            if not receive.poll(timeout):
                raise GlyphTrainError(f"{what}: gave up after {timeout:g} s (the font is too large or damaged)")
            try:
                status, value = receive.recv()
            except (EOFError, OSError):
                proc.join(5)
                raise GlyphTrainError(f"{what}: the font reader stopped (exit code {proc.exitcode}); "
                                      "the font is probably damaged") from None
        finally:
            receive.close()
            if proc.is_alive():
                proc.kill()
            proc.join(5)
    if status == "user":
        raise GlyphTrainError(value)
    if status == "error":
        raise GlyphTrainError(f"{what}: cannot read it ({value})")
    return value
