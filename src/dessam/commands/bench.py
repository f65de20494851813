"""`dessam bench`: speed of the fast and the reference paths, measured in one run."""

from __future__ import annotations

import argparse

from .shared import add_quiet

NAME = "bench"


def run(args) -> int:
    from ..workflows.bench import run_bench

    report = run_bench(device=args.device, quick=args.quick, out=args.out, compile=args.compile, model=args.model,
                       data=args.data, images=args.images, progress=not args.quiet)
    print(report.text)
    return 0 if report.passed else 1


def add_parser(sub) -> None:
    p = sub.add_parser(NAME, help="speed of the fast and the reference paths, measured in one run")
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", help="also write the table to this Markdown file")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--model", help="a trained model (RUN/model.pt); default: the bundled pretrained model (on a "
                   "CUDA machine without it: ViT-B with random weights)")
    p.add_argument("--images", help="a folder of your own images: end-to-end prediction on them")
    p.add_argument("--data", help="a COCO file with boxes for the images of --images: the training iteration")
    add_quiet(p)
    p.set_defaults(func=run)
