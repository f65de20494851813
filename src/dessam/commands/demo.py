"""`dessam demo`: synthetic data -> training from boxes -> evaluation with baselines."""

from __future__ import annotations

from .shared import add_quiet

NAME = "demo"


def run(args) -> int:
    from ..workflows.demo import pin_cpu_math, run_demo

    pin_cpu_math()   # before PyTorch loads
    run_demo(args.out, quick=args.quick, progress=not args.quiet)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(NAME, help="synthetic data -> training from boxes -> evaluation with baselines")
    p.add_argument("--out", default="demo_output")
    p.add_argument("--quick", action="store_true", help="a much shorter run (for checks)")
    add_quiet(p)
    p.set_defaults(func=run)
