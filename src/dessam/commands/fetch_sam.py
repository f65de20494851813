"""`dessam fetch-sam`: download an official SAM checkpoint."""

from __future__ import annotations

from .shared import add_quiet

NAME = "fetch-sam"


def run(args) -> int:
    from ..models.fetch import fetch_sam

    path = fetch_sam(args.variant, args.dir, progress=not args.quiet)
    print(path)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(NAME, help="download an official SAM checkpoint")
    p.add_argument("variant", choices=("vit_b", "vit_l", "vit_h"))
    p.add_argument("--dir", help="target folder (default ~/.cache/dessam or $DESSAM_HOME)")
    add_quiet(p)
    p.set_defaults(func=run)
