"""glyph-train: glyph recognition and embedding models trained from font outlines.

One subpackage per stage, each importing only the stages above it (and the shared top-level modules):

    corpus/      fonts -> glyphs.db, and reading it
    cache/       outlines -> images -> the prepared train/validation cache
    model/       the network and its export
    training/    data, augmentation, samplers, losses, schedule, checkpoints, tracking, processes
    evaluation/  metrics, the validation pass, `glyph-train evaluate`, calibration
    inference/   embed, search, label-font: using an export
    serve/       `glyph-train serve`: local search and review pages

    train.py     the training loop (`accelerate launch -m glyph_train.train`)
    cli.py       the `glyph-train` console script (no stage imports it)
    errors.py, outputs.py, atomic.py, flags.py: shared by every stage (flags.py: the type each flag is declared with)
"""

__version__ = "0.1.0"
