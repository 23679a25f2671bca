"""`ntkit analyze`: every NTK analysis of `ntkit.analysis` on the user's data and architecture, as a report folder.

The top level stays light (argparse only): JAX, scikit-learn and matplotlib are imported by `run`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from typing import Any

from ._args import non_negative_float, positive_float, positive_int

ACTIVATIONS = ("relu", "erf", "gelu", "leaky_relu", "abs", "sigmoid_like")
"""Activations of the default MLP (`_analyze.activation_layer`); `erf` and `sigmoid_like` are tanh-like."""

DEFAULTS: dict[str, Any] = {"n_train": None, "n_test": None, "depth": 2, "width": 512, "activation": "relu",
                            "W_std": 2.0 ** 0.5, "b_std": 0.0, "steps": 300, "learning_rate": None, "seed": 0}
"""`n_train`/`n_test` None: 256 each, capped by the data (`_analyze_data.prepare`)."""
QUICK: dict[str, Any] = {"n_train": 64, "n_test": 64, "width": 256, "steps": 100}
SIZES = {"default": (256, 256), "quick": (64, 64)}


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Registers `ntkit analyze` on the `ntkit` parser's subparsers."""
    from ._analyze_data import BUNDLED, TASKS

    p = subparsers.add_parser(
        "analyze", help="NTK analyses of your data and architecture; writes a report folder",
        description="Runs the analyses of ntkit.analysis on your data and architecture: the NTK spectrum, the "
                    "largest stable learning rate and the catapult window; the phase of the initialization "
                    "(ordered, chaotic or critical) and the trainable depth; the predicted learning curve, the "
                    "generalization complexity and the kernel-target alignment; and a short real training run of "
                    "the finite network, tracking whether its kernel stays fixed (lazy) and comparing its loss "
                    "curve to the NTK prediction. Writes PNG plots, report.md and metrics.json into --out.")
    data = p.add_argument_group("data (one of --data or --dataset)")
    data.add_argument("--data", metavar="FILE", help="features: a .npy or .npz file, or a .csv file with a header")
    data.add_argument("--targets", metavar="FILE_OR_KEY",
                      help="targets of .npy/.npz data: a second .npy file, or the key of an array of the .npz")
    data.add_argument("--features", metavar="KEY", help="the key of the features in a .npz of several arrays")
    data.add_argument("--target", metavar="COLUMN", help="the target column of a .csv file (name or 0-based index)")
    data.add_argument("--dataset", metavar="NAME",
                      help=f"a scikit-learn bundled data set: {', '.join(BUNDLED)}")
    data.add_argument("--task", choices=TASKS,
                      help="force the task (default: inferred; strings and at most 20 distinct integers are classes)")
    arch = p.add_argument_group("architecture (--arch, or the default MLP)")
    arch.add_argument("--arch", metavar="FILE.py:NAME",
                      help="an ntkit.nn layer, or a function of no arguments returning one: FILE.py:NAME or "
                           "package.module:NAME; its readout must have one output per class or target column")
    arch.add_argument("--depth", type=positive_int, help=f"hidden layers of the MLP (default {DEFAULTS['depth']})")
    arch.add_argument("--width", type=positive_int,
                      help=f"hidden width of the MLP's finite network (default {DEFAULTS['width']}, "
                           f"--quick {QUICK['width']})")
    arch.add_argument("--activation", choices=ACTIVATIONS,
                      help=f"the MLP's nonlinearity (default {DEFAULTS['activation']})")
    arch.add_argument("--W-std", dest="W_std", type=positive_float,
                      help="weight standard deviation σ_w of every Dense layer of the MLP (default √2)")
    arch.add_argument("--b-std", dest="b_std", type=non_negative_float,
                      help=f"bias standard deviation σ_b of the MLP (default {DEFAULTS['b_std']})")
    run_ = p.add_argument_group("run")
    run_.add_argument("--n-train", type=positive_int,
                      help=f"training rows (default {SIZES['default'][0]}, --quick {SIZES['quick'][0]}; at most "
                           "about 4/5 of the rows)")
    run_.add_argument("--n-test", type=positive_int,
                      help=f"test rows (default {SIZES['default'][1]}, --quick {SIZES['quick'][1]}, at most the rest)")
    run_.add_argument("--steps", type=positive_int,
                      help=f"gradient-descent steps of the real training run (default {DEFAULTS['steps']}, "
                           f"--quick {QUICK['steps']})")
    run_.add_argument("--learning-rate", type=positive_float,
                      help="learning rate of the real run (default: half the largest stable rate 2nk/λ_max of the "
                           "finite network's NTK)")
    run_.add_argument("--seed", type=int, help="random seed of the split and the initialization (default 0)")
    run_.add_argument("--out", default="ntkit-analysis", help="report folder (default ntkit-analysis)")
    run_.add_argument("--quick", action="store_true",
                      help="small sizes for a smoke test (" + ", ".join(f"{k}={v}" for k, v in QUICK.items()) + ")")
    run_.add_argument("--json", action="store_true", help="print the metrics as JSON instead of the summary")
    run_.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _error(message: str) -> int:
    print(f"ntkit analyze: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Runs `ntkit analyze` with parsed `args`; returns the exit status (0, or 2 with a message on stderr)."""
    missing = [m for m in ("sklearn", "matplotlib") if importlib.util.find_spec(m) is None]
    if missing:
        return _error(f"needs {' and '.join(missing)} (its data sets and plots); install them with "
                      "`pip install 'ntkit[cli]'`.")
    from ._analyze import run_analysis
    from ._analyze_data import prepare, read_data
    from ._analyze_report import summary_lines, write_analysis_report
    from ._arch import load_architecture
    from ._report import check_writable

    try:  # before the computation, not after it
        check_writable(args.out)
    except (ValueError, OSError) as err:
        return _error(f"cannot write the report to {args.out!r}: {err}")
    mlp_options = [f"--{name.replace('_', '-')}" for name in ("depth", "width", "activation", "W_std", "b_std")
                   if getattr(args, name) is not None]
    if args.arch is not None and mlp_options:
        return _error(f"{', '.join(mlp_options)} describe the default MLP; with --arch the architecture file sets "
                      "them")
    options = dict(DEFAULTS, **(QUICK if args.quick else {}))
    for name in DEFAULTS:
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    default_n_train, default_n_test = SIZES["quick" if args.quick else "default"]
    try:
        raw = read_data(args.data, args.dataset, args.targets, args.target, args.features)
        layer = None if args.arch is None else load_architecture(args.arch)
        data = prepare(raw, options.pop("n_train"), options.pop("n_test"), seed=options["seed"], task=args.task,
                       flatten=layer is None, default_n_train=default_n_train, default_n_test=default_n_test)
        metrics = run_analysis(data, layer=layer, arch=args.arch, **options, quick=args.quick,
                               progress=not args.no_progress)
    except ValueError as err:
        return _error(str(err))
    try:
        paths = write_analysis_report(metrics, args.out)
    except OSError as err:
        return _error(f"cannot write the report to {args.out!r}: {err}")
    if args.json:
        print(json.dumps(metrics, indent=1))
        return 0
    print("\n".join(summary_lines(metrics)))
    print(f"report: {', '.join(str(p) for p in paths)}")
    return 0
