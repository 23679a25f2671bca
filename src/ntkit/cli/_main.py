"""The `ntkit` command line."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys

from ._args import positive_float, positive_int

_DATASETS = ("digits", "iris", "wine", "breast_cancer")

# Commands beyond `demo`, each in a module of this package with `add_parser(subparsers)` (registers the command
# under its name) and `run(args) -> int` (the exit status). Modules are imported to build the parser, so keep their
# top level light (no JAX, scikit-learn or matplotlib imports there).
_COMMAND_MODULES: dict[str, str] = {
    "analyze": "._analyze_command",
    "kernel": "._kernel_command",
    "fit": "._fit_command",
}


def _widths(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers, got {text!r}")
    widths = tuple(positive_int(p) for p in parts)
    if len(set(widths)) != len(widths):
        raise argparse.ArgumentTypeError(f"repeats a width: {text}")
    return tuple(sorted(widths))


def _parser() -> argparse.ArgumentParser:
    from ._demo import DEFAULTS, QUICK

    parser = argparse.ArgumentParser(prog="ntkit", description="Neural Tangent Kernels for real models and data.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="infinitely wide vs finite ReLU networks on a bundled data set; writes a report folder",
        description="Analytic NTK/NNGP of a ReLU network and the test accuracy of the infinitely wide trained "
                    "network, the infinite ensemble and the NNGP posterior; finite networks of several widths "
                    "trained by gradient descent, their real and predicted training curves and the kernel's change "
                    "against width; the NTK spectrum and the largest stable learning rate. Writes PNG plots, "
                    "report.md and metrics.json into --out.")
    demo.add_argument("--dataset", choices=_DATASETS, help=f"scikit-learn bundled data set (default "
                                                           f"{DEFAULTS['dataset']})")
    demo.add_argument("--n-train", type=positive_int, help=f"training examples (default {DEFAULTS['n_train']})")
    demo.add_argument("--n-test", type=positive_int, help=f"test examples (default {DEFAULTS['n_test']})")
    demo.add_argument("--widths", type=_widths, metavar="W1,W2,...",
                      help=f"hidden widths of the finite networks (default {','.join(map(str, DEFAULTS['widths']))})")
    demo.add_argument("--depth", type=positive_int, help=f"hidden layers (default {DEFAULTS['depth']})")
    demo.add_argument("--steps", type=positive_int, help=f"gradient-descent steps (default {DEFAULTS['steps']})")
    demo.add_argument("--learning-rate", type=positive_float,
                      help="learning rate (default: half the smallest critical rate 2nk/λ_max)")
    demo.add_argument("--out", default="ntkit-report", help="report folder (default ntkit-report)")
    demo.add_argument("--seed", type=int, help="random seed (default 0)")
    demo.add_argument("--quick", action="store_true",
                      help="tiny sizes for a smoke test (" + ", ".join(f"{k}={v}" for k, v in QUICK.items()) + ")")
    demo.add_argument("--json", action="store_true", help="print the metrics as JSON instead of the summary")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    for module in _COMMAND_MODULES.values():
        importlib.import_module(module, __package__).add_parser(sub)
    return parser


def _missing_modules(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _demo(args, parser) -> int:
    missing = _missing_modules("sklearn", "matplotlib")
    if missing:
        print(f"ntkit demo: error: needs {' and '.join(missing)} (its data sets and plots); install them with "
              "`pip install 'ntkit[cli]'`.", file=sys.stderr)
        return 2
    from ._demo import DEFAULTS, QUICK, run_demo
    from ._report import check_writable, summary_lines, write_report

    try:  # before the computation, not after it
        check_writable(args.out)
    except (ValueError, OSError) as err:
        print(f"ntkit demo: error: cannot write the report to {args.out!r}: {err}", file=sys.stderr)
        return 2

    options = dict(DEFAULTS, **(QUICK if args.quick else {}))
    for name in DEFAULTS:
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    try:
        metrics = run_demo(**options, progress=not args.no_progress)
    except ValueError as err:
        print(f"ntkit demo: error: {err}", file=sys.stderr)
        return 2
    try:
        paths = write_report(metrics, args.out)
    except OSError as err:
        print(f"ntkit demo: error: cannot write the report to {args.out!r}: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(metrics, indent=1))
        return 0
    print("\n".join(summary_lines(metrics)))
    print(f"report: {', '.join(str(p) for p in paths)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args, parser)
    if args.command in _COMMAND_MODULES:
        return int(importlib.import_module(_COMMAND_MODULES[args.command], __package__).run(args))
    return 0  # pragma: no cover - argparse requires a command


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
