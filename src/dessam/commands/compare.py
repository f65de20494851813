"""`dessam compare`: merge several eval reports into one Markdown table."""

from __future__ import annotations

NAME = "compare"


def run(args) -> int:
    from ..evaluation.compare import compare_reports

    print(compare_reports(args.reports, out_path=args.out, names=args.names))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(NAME, help="merge several eval reports into one Markdown table")
    p.add_argument("reports", nargs="+", metavar="REPORT")
    p.add_argument("--out", help="write the table to this Markdown file too")
    p.add_argument("--names", nargs="+", help="a name per report (default: the folder names)")
    p.set_defaults(func=run)
