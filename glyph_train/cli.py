"""`glyph-train` console script: one subcommand per pipeline stage, each living in its own module.

Every subcommand module exposes `add_arguments(parser)` and `run(args) -> int`; modules are imported
lazily so `glyph-train build-db` does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from glyph_train import outputs
from glyph_train.errors import GlyphTrainError

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "build-db": ("glyph_train.corpus.build_db", "extract glyph outlines from fonts into a glyphs.db"),
    "prepare": ("glyph_train.cache.prepare", "render a glyphs.db into a cached train/validation dataset"),
    "show": ("glyph_train.cache.show", "write a contact sheet of rendered glyphs"),
    "train": ("glyph_train.train", "train a classifier + embedding model (also under accelerate launch)"),
    "evaluate": ("glyph_train.evaluation.evaluate", "classification and FAISS retrieval metrics of an export on a glyphs.db"),
    "embed": ("glyph_train.inference.embed", "embed every glyph of a glyphs.db or of font files into a FAISS index"),
    "search": ("glyph_train.inference.search", "find look-alike glyphs across the fonts of an index"),
    "label-font": ("glyph_train.inference.label_font",
                   "label every glyph of a font from its outline (CSV) and optionally write a repaired font"),
    "serve": ("glyph_train.serve.command", "local web pages to search look-alike glyphs and review a font's labels"),
}


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, object]:
    parser = argparse.ArgumentParser(prog="glyph-train", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    module = None
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:  # only the chosen subcommand's module is imported
            module = importlib.import_module(module_name)
            module.add_arguments(p)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, module = build_parser(argv)
    args = parser.parse_args(argv)
    outputs.reset()
    try:
        return int(module.run(args) or 0)
    except GlyphTrainError as err:
        line = str(err)
    except KeyboardInterrupt:
        print(f"glyph-train {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a full disk, a read-only filesystem... deep inside pyarrow, SQLite, torch
        line = outputs.write_error_line(err)
        if line is None:
            raise  # a bug: keep the traceback
    print(f"glyph-train {args.command}: error: {line}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
