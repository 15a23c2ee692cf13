"""Exact leave-one-out top-D neighbour search on Intel AMX, for validation retrieval (issue 9).

FAISS's `IndexFlatIP` runs its fp32 matrix product near the AVX-512 peak, so a faster exact search has to do
the products in bf16 on AMX tiles, and must not write the 100k x 100k score matrix out (that alone cost more
than FAISS's whole search, BENCHMARKS.md 5c). `kernels/loo_topd.cpp` fuses both: bf16 tile products, each
compared in registers with its query's bar; only scores that clear it get an exact fp32 dot product. The bar
is the D-th best exact score found so far minus a proven bound on the bf16 error, so no item of the exact top
D is ever skipped (see `_error_bounds`).

The kernel is compiled with the system's C++ compiler on first use and cached under the glyph-train cache
directory. `available()` says whether this machine can run it and, if not, why (no AMX, no compiler).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from glyph_train.outputs import default_cache_dir
from glyph_train.training.distributed import cpu_flags

KERNEL_SOURCE = Path(__file__).with_name("kernels") / "loo_topd.cpp"
_CXX_FLAGS = ["-O3", "-std=c++17", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mamx-tile",
              "-mamx-bf16", "-shared", "-fPIC"]
_CPU_FLAGS = ("amx_tile", "amx_bf16", "avx512f", "avx512bw")
_QUERY_BLOCK = 1024  # queries per kernel call; calls run on threads (ctypes releases the GIL)


def _cpu_flags() -> set[str]:
    try:
        return cpu_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        return set()


def _compile(cache: Path) -> Path:
    """The kernel's shared library, compiled once per source, flags and compiler (atomically published)."""
    compiler = os.environ.get("CXX", "g++")
    if not shutil.which(compiler):
        raise RuntimeError(f"no C++ compiler ({compiler}) to build the AMX kernel")
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([KERNEL_SOURCE.read_text(), *_CXX_FLAGS, version]).encode()).hexdigest()[:16]
    target = cache / f"loo_topd-{key}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        built = Path(tmp) / target.name
        run = subprocess.run([compiler, *_CXX_FLAGS, str(KERNEL_SOURCE), "-o", str(built)], capture_output=True, text=True)
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["no message"])[-1]
            raise RuntimeError(f"{compiler} could not build the AMX kernel: {last}")
        os.replace(built, target)
    return target


@functools.cache
def _library() -> ctypes.CDLL | str:
    """The loaded kernel, or why there is none."""
    missing = [f for f in _CPU_FLAGS if f not in _cpu_flags()]
    if missing:
        return f"the CPU lacks {', '.join(missing)}"
    try:
        lib = ctypes.CDLL(str(_compile(default_cache_dir() / "kernels")))
    except (RuntimeError, OSError) as e:
        return str(e)
    if lib.amx_request() != 0:
        return "the kernel refused AMX state (arch_prctl ARCH_REQ_XCOMP_PERM failed)"
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.loo_topd.restype = i64
    lib.loo_topd.argtypes = [p, p, p, p, i64, i64, ctypes.c_int, p, p, p, p, p, ctypes.c_int, p, p, p, i64, i64]
    return lib


def available() -> tuple[bool, str]:
    """(whether `leave_one_out_topd` runs here, why not)."""
    lib = _library()
    return (True, "AMX kernel") if isinstance(lib, ctypes.CDLL) else (False, lib)


def _cluster_order(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Items grouped by their nearest of sqrt(N) random items. Only speed depends on it: refining the groups
    by k-means measured no faster on 100k real embeddings."""
    n = len(x)
    centres = x[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: max(1, int(n**0.5))]]
    return torch.argsort((x @ centres.T).argmax(dim=1), stable=True)


def _error_bounds(x: torch.Tensor, h: torch.Tensor, queries: torch.Tensor) -> np.ndarray:
    """Per query, a bound on |AMX score - exact fp32 score| over every gallery item g. With h = x rounded to
    bf16, h_q.h_g - q.g = h_q.(h_g - g) + (h_q - q).g, at most |h_q| max|h_g - g| + |h_q - q| max|g| by
    Cauchy-Schwarz; AMX multiplies bf16 exactly and sums in fp32, and the exact score is an fp32 sum too: each
    sum is off by at most d * 2^-24 for vectors of norm about 1 (with room)."""
    err = (x - h.float()).norm(dim=1)
    hq = h[queries].float().norm(dim=1)
    sums = 2 * (1.01 * x.shape[1] * 2.0**-24) + 1e-6
    return (hq * err.max() + err[queries] * x.norm(dim=1).max() + sums).numpy().astype(np.float32)


def leave_one_out_topd(x: np.ndarray, queries: np.ndarray, depth: np.ndarray,
                       threads: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each query's depth[i] best other items of x (rows L2-normalised, float32) by exact fp32 inner product,
    best first, the higher index first among equal scores (FAISS's order). Yields (rows, scores, indices) per
    block of queries, rows indexing `queries`; scores/indices are (len(rows), max(depth)), -inf / -1 past a
    query's depth. Blocks run on `threads` threads (default torch's), a few ahead of the consumer, so memory
    stays at a few blocks whatever N. Needs 1 <= depth <= N - 1."""
    lib = _library()
    if not isinstance(lib, ctypes.CDLL):
        raise RuntimeError(f"the AMX search cannot run here: {lib}")
    n, dim = x.shape
    queries = np.asarray(queries, dtype=np.int64)
    depth = np.asarray(depth, dtype=np.int32)
    if len(queries) == 0:
        return
    if depth.min() < 1 or depth.max() > n - 1:
        raise ValueError(f"depth must lie in [1, {n - 1}]")
    width = int(depth.max())

    d = -(-dim // 32) * 32  # tile depth; zero padding changes no product
    xt = torch.zeros(n, d)
    xt[:, :dim] = torch.from_numpy(x)
    order = _cluster_order(xt)
    position = torch.empty_like(order)
    position[order] = torch.arange(n)
    xt = xt[order].contiguous()
    h = xt.to(torch.bfloat16)
    ng_pad = -(-n // 32) * 32
    gallery = torch.zeros(ng_pad, d, dtype=torch.bfloat16)
    gallery[:n] = h
    gallery_vnni = gallery.view(ng_pad // 16, 16, d // 32, 16, 2).permute(0, 2, 3, 1, 4).contiguous()

    # Queries in gallery order, so that a block of them shares its nearest gallery chunks.
    own = position[torch.from_numpy(queries)]
    by_position = torch.argsort(own).numpy()
    own = own[by_position].contiguous()
    nq_pad = -(-len(queries) // 32) * 32
    query_bf16 = torch.zeros(nq_pad, d, dtype=torch.bfloat16)
    query_bf16[: len(queries)] = h[own]
    query_f32 = xt[own].contiguous()
    bound = _error_bounds(xt, h, own)
    bar = np.full(len(queries), -np.inf, np.float32)
    depth_sorted = np.ascontiguousarray(depth[by_position])
    original = order.numpy().astype(np.int64)
    out_row = np.arange(len(queries), dtype=np.int64) % _QUERY_BLOCK
    own_np = own.numpy()

    def ptr(a) -> ctypes.c_void_p:
        return ctypes.c_void_p(a.data_ptr() if isinstance(a, torch.Tensor) else a.ctypes.data)

    def block(q0: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        q1 = min(len(queries), q0 + _QUERY_BLOCK)
        scores = np.full((q1 - q0, width), -np.inf, np.float32)
        index = np.full((q1 - q0, width), -1, np.int64)
        lib.loo_topd(ptr(query_bf16), ptr(gallery_vnni), ptr(query_f32), ptr(xt), n, ng_pad, d, ptr(own_np),
                     ptr(bar), ptr(bound), ptr(depth_sorted), ptr(original), width, ptr(out_row), ptr(scores),
                     ptr(index), q0, q1)
        return by_position[q0:q1], scores, index

    threads = threads or torch.get_num_threads()
    with ThreadPoolExecutor(threads) as pool:
        pending: deque = deque()
        for q0 in range(0, len(queries), _QUERY_BLOCK):
            pending.append(pool.submit(block, q0))
            if len(pending) > 2 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
