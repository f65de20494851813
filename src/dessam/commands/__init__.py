"""The `dessam` command: one module per sub-command, each with `add_parser(sub)` (its flags, help
texts read from the configuration they set: `help_texts`) and `run(args)` (one call into dessam);
what several share (the model they run, licence lines, flags defined alike) is in `shared`.

A user mistake (`DessamError`) is printed as one line, without a traceback, with exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import DessamError
from . import (bench, compare, convert, demo, evaluate, export, fetch_sam, label, predict, pretrain_model,
               pretrain_teacher, synth, train, validate)
from .help_texts import Parser

# in the order `dessam --help` lists them
COMMANDS = (train, label, predict, evaluate, compare, synth, convert, validate, fetch_sam, demo, pretrain_teacher,
            pretrain_model, export, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="dessam", description="Nucleus instance segmentation trained from boxes (DES-SAM).")
    parser.add_argument("--version", action="version", version=f"dessam {__import__('dessam').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DessamError as exc:
        print(f"dessam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dessam: interrupted", file=sys.stderr)
        return 130
