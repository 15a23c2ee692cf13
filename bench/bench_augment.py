"""Augmentations per second on one CPU core: per-sample `augment` (what a Dataset.__getitem__ in a DataLoader
worker would call) and `augment_batch` (one call per batch, e.g. in a collate function).

    python bench/bench_augment.py [--img-size 128] [--batch-size 256] [--seconds 5] [--threads 1]

Images are letters drawn with Pillow's bundled font (ink 255 on black, like raster.render's output).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from glyph_train.training.augment import AugmentParams, augment, augment_batch


def glyph_images(n: int, size: int) -> torch.Tensor:
    font = ImageFont.load_default(size=int(size * 0.7))
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    out = np.zeros((n, 1, size, size), np.uint8)
    for i in range(n):
        img = Image.new("L", (size, size), 0)
        ImageDraw.Draw(img).text((size / 2, size / 2), letters[i % len(letters)], fill=255, font=font, anchor="mm")
        out[i, 0] = np.asarray(img)
    return torch.from_numpy(out)


def rate(fn, items_per_call: int, seconds: float) -> dict:
    """Items per wall-clock second and per CPU second of this process (the latter is robust to other load
    on a shared machine; with --threads 1 both measure one core)."""
    fn()  # warm-up
    calls, wall, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        fn()
        calls += 1
    items = calls * items_per_call
    return {"per_s": round(items / (time.perf_counter() - wall)), "per_cpu_s": round(items / (time.process_time() - cpu))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    imgs = glyph_images(args.batch_size, args.img_size)
    params = AugmentParams()
    counter = iter(range(10**12))  # fresh sample indices, as in training

    def single():
        i = next(counter)
        augment(imgs[i % len(imgs)], 0, 0, i, params)

    def batched():
        start = next(counter) * len(imgs)
        augment_batch(imgs, 0, 0, range(start, start + len(imgs)), params)

    def copy_only():  # the floor: uint8 -> float conversion that any pipeline pays
        augment_batch(imgs, 0, 0, range(len(imgs)), AugmentParams(enabled=False))

    result = {
        "img_size": args.img_size, "threads": args.threads, "batch_size": args.batch_size,
        "per_sample": rate(single, 1, args.seconds),
        "batched": rate(batched, len(imgs), args.seconds),
        "disabled_batched": rate(copy_only, len(imgs), args.seconds),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
