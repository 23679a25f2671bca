"""The `ntkit` command line."""

from __future__ import annotations

import argparse
import json
import sys


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ntkit", description="Neural Tangent Kernels for real models and data.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="empirical NTK of a wide ReLU network on a bundled data set")
    demo.add_argument("--dataset", default="digits", choices=["digits", "iris", "wine", "breast_cancer"])
    demo.add_argument("--n-train", type=_positive_int, default=400, help="training examples (default 400)")
    demo.add_argument("--width", type=_positive_int, default=512, help="hidden width (default 512)")
    demo.add_argument("--depth", type=_positive_int, default=2, help="hidden layers (default 2)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        try:
            summary = run_demo(args.dataset, args.n_train, args.width, args.depth, args.seed)
        except ValueError as err:
            print(f"ntkit demo: error: {err}", file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps(summary, indent=2))
            return 0
        print(f"Empirical NTK of a {args.depth}-hidden-layer ReLU MLP (width {args.width}, "
              f"{summary['n_params']:,} parameters) on {summary['n_train']} '{args.dataset}' examples")
        print(f"  implementation (auto): {summary['implementation']}, {summary['seconds']:.2f} s")
        print(f"  λ_max = {summary['lambda_max']:.4g}   λ_min = {summary['lambda_min']:.4g}   "
              f"condition number = {summary['condition_number']:.4g}")
        print(f"  effective rank = {summary['effective_rank']:.2f}   "
              f"top-10 share of the trace = {summary['top10_trace_fraction']:.1%}")
        print(f"  suggested maximum learning rate 2nk/λ_max = {summary['max_learning_rate']:.4g}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
