"""Issue 9: channels_last and torch.compile on CPU, against plain eager, side by side in one run.

One training step = forward of the project's GlyphModel + CE + w·SupCon (glyph_train.training.losses), backward and
an AdamW step, on random 1-channel images and labels (the step's cost does not depend on the pixels). For
each (model, image size, precision) the variants below run in turn, `--steps` timed steps each, `--repeats`
rounds with the variant order rotated every round; medians and ratios to eager are reported.

- eager: the model as the trainer runs it.
- channels_last: model and input batch in torch.channels_last memory format (NHWC convolutions in oneDNN).
- compile: torch.compile(model) (Inductor, C++/OpenMP kernels); compiled before timing, and the compile time
  reported separately.

bf16 runs the step under torch.autocast("cpu", bfloat16), as Accelerate's --mixed-precision bf16 does; on
CPUs without native bf16 (AVX2 only) bf16 is emulated and slow.

    python bench/bench_cpu_speedups.py [--models levit_128s resnet18] [--img-sizes 64 128]
        [--precisions no bf16] [--variants eager channels_last compile] [--batch-size 32] [--steps 5]
        [--warmup 2] [--repeats 3] [--threads 1] [--json PATH]

Progress goes to stderr, one JSON object to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from glyph_train.model.network import GlyphModel, param_groups
from glyph_train.training.losses import supcon_loss

NUM_CLASSES = 200


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load() -> float:
    return round(os.getloadavg()[0], 2)


class Contender:
    """One (model, size, precision, variant): its model, optimizer and a fixed batch."""

    def __init__(self, model_name: str, img_size: int, precision: str, variant: str, batch_size: int):
        torch.manual_seed(0)
        self.model = GlyphModel(model_name, num_classes=NUM_CLASSES, embedding_dim=128, img_size=img_size)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, 1e-3, 2e-3, 0.01))
        self.x = torch.randn(batch_size, 1, img_size, img_size)
        self.y = torch.randint(0, NUM_CLASSES, (batch_size,))
        if variant == "channels_last":
            self.model = self.model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if variant == "compile" else self.model
        self.bf16 = precision == "bf16"
        self.model.train()

    def step(self) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = self.forward(self.x, self.y)
            loss = F.cross_entropy(out["logits"], self.y) + 0.3 * supcon_loss(out["embedding"], self.y, 0.07)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def timed(self, steps: int) -> float:
        """Images per second over `steps` steps."""
        t = time.perf_counter()
        for _ in range(steps):
            self.step()
        return steps * len(self.y) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["levit_128s"])
    ap.add_argument("--img-sizes", nargs="+", type=int, default=[64, 128])
    ap.add_argument("--precisions", nargs="+", default=["no", "bf16"], choices=("no", "bf16"))
    ap.add_argument("--variants", nargs="+", default=["eager", "channels_last", "compile"],
                    choices=("eager", "channels_last", "compile"))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per contender (compile happens here)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per contender per round")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if "eager" not in args.variants:
        args.variants = ["eager", *args.variants]

    res: dict = {"threads": torch.get_num_threads(), "batch_size": args.batch_size, "steps": args.steps,
                 "repeats": args.repeats, "torch": torch.__version__,
                 "cpu_capability": torch.backends.cpu.get_cpu_capability(), "load_start": load(), "results": []}
    t_all = time.perf_counter()
    for model_name in args.models:
        for size in args.img_sizes:
            for precision in args.precisions:
                contenders, compile_s = {}, {}
                for variant in args.variants:
                    contenders[variant] = Contender(model_name, size, precision, variant, args.batch_size)
                    t = time.perf_counter()
                    for _ in range(args.warmup):
                        contenders[variant].step()
                    compile_s[variant] = round(time.perf_counter() - t, 1)
                rates: dict[str, list[float]] = {v: [] for v in args.variants}
                for r in range(args.repeats):
                    order = args.variants[r % len(args.variants):] + args.variants[: r % len(args.variants)]
                    for variant in order:
                        rates[variant].append(contenders[variant].timed(args.steps))
                med = {v: round(statistics.median(x), 2) for v, x in rates.items()}
                row = {"model": model_name, "img_size": size, "precision": precision, "img_per_s": med,
                       "over_eager": {v: round(med[v] / med["eager"], 3) for v in args.variants},
                       "warmup_s": compile_s, "runs": {v: [round(x, 2) for x in xs] for v, xs in rates.items()},
                       "load": load()}
                res["results"].append(row)
                log(f"{model_name} {size} px {precision}: {med} ratios {row['over_eager']} (load {row['load']})")
    res.update(load_end=load(), wall_s=round(time.perf_counter() - t_all, 1))
    print(json.dumps(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
