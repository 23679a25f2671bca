"""`ntkit kernel`: an architecture's NNGP/NTK of `.npy` inputs computed into a Zarr store, tile by tile.

Rerunning the same command resumes an interrupted job (see `ntkit.jobs.kernel_job`). Top level kept light: JAX,
zarr and dask are imported in `run`.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from typing import Any

from ._args import positive_int

_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12,
          "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}


def _bytes(text: str) -> float:
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    try:
        value = float(match.group(1)) * _UNITS[unit] if match else math.nan
    except (ValueError, KeyError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of bytes (e.g. 8e9 or 8GiB), got {text!r}")
    return value


def _get(text: str) -> tuple[str, ...]:
    gets = tuple(g.strip().lower() for g in text.split(",") if g.strip())
    if not gets or any(g not in ("nngp", "ntk") for g in gets) or len(set(gets)) != len(gets):
        raise argparse.ArgumentTypeError(f"must be nngp, ntk or nngp,ntk; got {text!r}")
    return gets


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "kernel", help="an architecture's NNGP/NTK of .npy inputs, tile by tile into a Zarr store (resumable)",
        description="Computes the infinite-width kernel of an ntkit.nn architecture between the examples of --x1 "
                    "(and --x2) into the Zarr store --out, one chunk per tile. Interrupted jobs resume: rerun the "
                    "same command and only the missing tiles are computed. Without --x2 only tiles on and above the "
                    "diagonal are computed. Read the result with ntkit.jobs.load(STORE, get) or ntkit.jobs.open.")
    parser.add_argument("--arch", required=True, metavar="FILE.py:NAME",
                        help="the architecture: an ntkit.nn layer (or a function of no arguments returning one) in "
                             "FILE.py or package.module")
    parser.add_argument("--x1", required=True, metavar="X.npy", help="inputs (N1, ...), batch first")
    parser.add_argument("--x2", metavar="Y.npy", help="second inputs (N2, ...); default: the kernel of --x1 with "
                                                      "itself")
    parser.add_argument("--out", required=True, metavar="STORE", help="the Zarr store: a path or an fsspec URL")
    parser.add_argument("--get", type=_get, default=("nngp", "ntk"), metavar="{nngp,ntk,nngp,ntk}",
                        help="the kernels to store (default nngp,ntk)")
    parser.add_argument("--tile", type=positive_int, metavar="N",
                        help="examples per tile side (default: from --memory-limit, or the stored job's)")
    parser.add_argument("--memory-limit", type=_bytes, metavar="BYTES",
                        help="bytes one tile's computation may use, e.g. 8e9 or 8GiB (default: half the free "
                             "memory)")
    parser.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                        help="a Dask scheduler: tiles become tasks on its workers, which write to --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _error(message: str) -> int:
    print(f"ntkit kernel: error: {message}", file=sys.stderr)
    return 2


def _load_npy(path: str, option: str) -> Any:
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {option} {path!r} as a .npy array: {err}") from None


def run(args: argparse.Namespace) -> int:
    from importlib.util import find_spec

    if find_spec("zarr") is None:
        return _error("needs zarr to write the store: `pip install 'ntkit[dask]'`.")
    from ..jobs import kernel_job
    from ._arch import load_architecture

    client = None
    try:
        layer = load_architecture(args.arch)
        x1 = _load_npy(args.x1, "--x1")
        x2 = None if args.x2 is None else _load_npy(args.x2, "--x2")
        if args.scheduler is not None:
            if find_spec("distributed") is None:
                return _error("--scheduler needs dask.distributed: `pip install 'ntkit[dask]'`.")
            from distributed import Client

            try:
                client = Client(args.scheduler, timeout="20s")
            except (OSError, TimeoutError) as err:
                return _error(f"cannot connect to the Dask scheduler {args.scheduler!r}: {err}")
        state = kernel_job(layer, x1, x2, store=args.out, get=args.get, tile=args.tile,
                           memory_limit=args.memory_limit, client=client, progress=not args.no_progress)
    except (ValueError, TypeError) as err:
        return _error(str(err))
    finally:
        if client is not None:
            client.close()
    print(state.summary())
    return 0
