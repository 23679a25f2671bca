"""Benchmark of reading a kernel job's store: tiles from their chunk files against Zarr's own reader.

A symmetric float32 ReLU NTK on `--n` points (default 40,000) is written by `ntkit.jobs.kernel_job` in tiles of
`--tile` (default 4,096) into a temporary local store, then read whole, tile by tile (every stored tile once), and
multiplied by a vector as conjugate gradients do (`ntkit.solve`'s product with a stored kernel, each stored tile
used for its block and its mirror): once through the chunk-file reader `ntkit.jobs.open` uses for local stores,
once with that reader switched off (every read through Zarr). Each reading is done twice and the second is
reported, so that both find the store in the page cache. The two products are checked to be equal.

Usage: python benchmarks/store_read.py --out benchmarks/results [--n 40000] [--tile 4096] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

from _report import machine, write


def _kernel_fn():
    import ntkit.nn as stax

    return stax.serial(stax.Dense(512, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1, W_std=1.5, b_std=0.1))[2]


def _timings(k, v) -> tuple[float, float, object]:
    from ntkit.solve import matmul

    n, tile = k.shape[0], k.upper_tile
    read_s = product_s = 0.0
    product = None
    for _ in range(2):  # the second of each, from the page cache
        start = time.perf_counter()
        for i0 in range(0, n, tile):
            for j0 in range(i0, n, tile):
                k[i0:i0 + tile, j0:j0 + tile]
        read_s = time.perf_counter() - start
        start = time.perf_counter()
        product = matmul(k, v)
        product_s = time.perf_counter() - start
    return read_s, product_s, product


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--n", type=int, default=40_000)
    parser.add_argument("--tile", type=int, default=4096)
    parser.add_argument("--quick", action="store_true", help="N = 5,000, tile 1,024")
    args = parser.parse_args()
    if args.quick:
        args.n, args.tile = 5000, 1024
    import jax
    import numpy as np

    from ntkit import jobs

    x = np.asarray(jax.random.normal(jax.random.key(0), (args.n, 16)), np.float32)
    v = np.random.default_rng(0).normal(size=args.n).astype(np.float32)
    folder = tempfile.mkdtemp(prefix="ntkit-store-read-")
    try:
        store = os.path.join(folder, "k.zarr")
        start = time.perf_counter()
        jobs.kernel_job(_kernel_fn(), x, store=store, get="ntk", tile=args.tile, progress=False)
        job_s = time.perf_counter() - start
        size_gb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(store) for f in fs) / 2**30
        files = jobs.open(store, "ntk")
        assert files._chunk_files() is not None, "the store should have the layout read from chunk files"
        through_zarr = jobs.open(store, "ntk")
        through_zarr._files = None  # switched off: every read through Zarr
        read_files, product_files, p_files = _timings(files, v)
        read_zarr, product_zarr, p_zarr = _timings(through_zarr, v)
        if not np.array_equal(p_files, p_zarr):
            raise SystemExit("the two readers gave different products")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    results = {"machine": machine(),
               "quick": args.quick, "n": args.n, "tile": args.tile, "store_gb": round(size_gb, 2),
               "job_s": round(job_s, 1),
               "read_s": {"chunk_files": round(read_files, 3), "zarr": round(read_zarr, 3),
                          "ratio": round(read_zarr / read_files, 2)},
               "product_s": {"chunk_files": round(product_files, 3), "zarr": round(product_zarr, 3),
                             "ratio": round(product_zarr / product_files, 2)}}
    print(json.dumps(results, indent=1))
    write(args.out, "store_read", results)


if __name__ == "__main__":
    main()
