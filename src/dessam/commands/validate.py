"""`dessam validate`: check a COCO file and its images before training."""

from __future__ import annotations

NAME = "validate"


def run(args) -> int:
    from ..data.validate import raise_on_errors, validate_coco

    report = validate_coco(args.file, args.images, decode=not args.headers_only)
    print(report.text())
    raise_on_errors(report)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(NAME, help="check a COCO file and its images before training")
    p.add_argument("file")
    p.add_argument("--images", required=True)
    p.add_argument("--headers-only", action="store_true", help="read image headers only (faster)")
    p.set_defaults(func=run)
