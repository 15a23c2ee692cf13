"""Embed throughput of an export: its forward pass over a stream of batches, host -> device included.

A stream of `--batches` batches of 1-channel images at the export's size (random pixels: the cost does not
depend on them) is pinned on the host, copied to the device non-blocking and run through the exported
GlyphModel in inference mode, under bf16 autocast with --precision bf16. Images per second after --warmup
batches, median of --repeats passes. Used by bench/gpu_check.sh.

    python bench/bench_forward.py EXPORT_DIR [--device cuda] [--batch-size 256] [--batches 20] [--precision bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from glyph_train.model.export import load_export


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export", help="an export directory (RUN_DIR/export)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precision", default="bf16", choices=("no", "bf16"))
    args = ap.parse_args()
    device = torch.device(args.device)
    model, labels, config = load_export(args.export, device)
    size = config["img_size"]
    pin = device.type == "cuda"
    stream = [torch.rand(args.batch_size, 1, size, size).pin_memory() if pin else
              torch.rand(args.batch_size, 1, size, size) for _ in range(args.batches)]

    def run(batches) -> None:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                    enabled=args.precision == "bf16"):
            for batch in batches:
                out = model(batch.to(device, non_blocking=True))
                out["embedding"].float().cpu()  # what embed keeps: the embeddings back on the host
        sync(device)

    run(stream[: args.warmup])
    rates = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        run(stream)
        rates.append(args.batches * args.batch_size / (time.perf_counter() - t))
    print(json.dumps({"export": str(args.export), "model": config["model_name"], "img_size": size,
                      "device": str(device), "precision": args.precision, "batch_size": args.batch_size,
                      "embed_img_per_s": round(statistics.median(rates), 1), "runs": [round(r, 1) for r in rates],
                      "load": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
