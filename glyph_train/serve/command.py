"""`glyph-train serve --index INDEX_DIR --checkpoint EXPORT [--host 127.0.0.1] [--port 8000]`

Serves the search and review pages with waitress (a production WSGI server, pure Python) on localhost by
default. Uploads live in a fresh temporary folder that is removed when the server stops (Ctrl-C or SIGTERM).
The server reads the index (and the font files or glyphs.db it names, for pictures) and the export; no path
from a request is ever opened.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from glyph_train.errors import GlyphTrainError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from glyph_train.inference.index import INDEX_FLAG
    from glyph_train.inference.label_font import MIN_CONFIDENCE_FLAG
    from glyph_train.model.export import CHECKPOINT_FLAG

    INDEX_FLAG.add(parser, required=True)
    CHECKPOINT_FLAG.add(parser, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--max-upload-mb", type=float, default=50.0, help="largest font file accepted (default 50 MB)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds labelling or repairing one uploaded font may take (default 300)")
    MIN_CONFIDENCE_FLAG.add(parser)  # label-font's: a glyph less likely than P starts as unknown
    parser.add_argument("--threads", type=int, default=4, help="request threads (default 4)")


def run(args: argparse.Namespace) -> int:
    try:
        import waitress

        from glyph_train.serve.app import ServeOptions, create_app
    except ImportError as err:
        raise GlyphTrainError(f"serve needs Flask and waitress ({err}); pip install 'glyph-train[serve]'") from None

    if not 0 <= args.port <= 65535:
        raise GlyphTrainError(f"--port {args.port}: expected 0-65535")
    if args.max_upload_mb <= 0 or args.timeout <= 0 or args.threads < 1:
        raise GlyphTrainError("--max-upload-mb, --timeout and --threads must be positive")
    uploads = Path(tempfile.mkdtemp(prefix="glyph-train-serve-"))
    signal.signal(signal.SIGTERM, _stop)  # a plain `kill` also cleans up
    try:
        app = create_app(ServeOptions(args.index, args.checkpoint, uploads, args.min_confidence, args.max_upload_mb,
                                      args.timeout))
        try:
            server = waitress.create_server(app, host=args.host, port=args.port, threads=args.threads,
                                            ident="glyph-train")
        except OSError as err:
            raise GlyphTrainError(f"cannot listen on {args.host}:{args.port} ({err.strerror or err}); "
                                  "choose another --port") from None
        catalog = app.extensions["glyph_train"]["catalog"]
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(f"glyph-train serve: http://{host}:{server.effective_port}/  ({len(catalog):,} glyphs in {args.index}, "
              f"export {args.checkpoint}); Ctrl-C stops", flush=True)
        if args.host not in LOOPBACK:
            print(f"glyph-train serve: warning: listening on {args.host}, reachable from other machines", file=sys.stderr)
        try:
            server.run()
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            server.close()
            app.extensions["glyph_train"]["reviews"].close()
    finally:
        shutil.rmtree(uploads, ignore_errors=True)
    print("glyph-train serve: stopped", flush=True)
    return 0


def _stop(signum, frame) -> None:
    raise SystemExit(0)
