"""All-reduce bandwidth between the processes of a launch (NCCL on GPUs, gloo on CPU), plus the world size.

    python -m torch.distributed.run --nproc_per_node N bench/bench_allreduce.py [--backend nccl] [--mib 256]

Rank 0 prints one JSON object: world size, backend, and the bus bandwidth of an all-reduce of --mib MiB
(nccl-tests' definition: bytes * 2 (n-1)/n / time), median of --repeats. Used by bench/gpu_check.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.distributed as dist


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="nccl" if torch.cuda.is_available() else "gloo")
    ap.add_argument("--mib", type=float, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if args.backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    x = torch.ones(int(args.mib * 2**20 / 4), device=device)
    dist.all_reduce(x)  # warm-up, and a correctness check: every rank contributed ones
    ok = bool((x == world).all())
    times = []
    for _ in range(args.repeats):
        dist.barrier()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        dist.all_reduce(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    t = statistics.median(times)
    if rank == 0:
        nbytes = x.numel() * 4
        print(json.dumps({"backend": args.backend, "world_size": world, "mib": args.mib, "sum_correct": ok,
                          "seconds": round(t, 4), "bus_gb_per_s": round(nbytes * 2 * (world - 1) / world / t / 1e9, 2)}))
    dist.destroy_process_group()
    if not ok:
        raise SystemExit("all_reduce gave a wrong sum")


if __name__ == "__main__":
    main()
