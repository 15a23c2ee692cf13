"""Prints what `--mixed-precision REQUESTED` resolves to in this process; tests/test_precision.py runs it
under a real `accelerate launch`, whose own flags and config file decide what `auto` defers to.

    python tests/_precision_probe.py REQUESTED
"""

import sys

from glyph_train.training.distributed import resolve_mixed_precision

if __name__ == "__main__":
    print("resolved", *resolve_mixed_precision(sys.argv[1]), sep="\t")
