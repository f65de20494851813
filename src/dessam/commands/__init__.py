"""The `dessam` command: one module per sub-command, each with `add_parser(sub)` (its flags, help
texts read from the configuration they set: `help_texts`) and `run(args)` (one call into dessam);
what several share (the model they run, licence lines, flags defined alike) is in `shared`. A run
loads the module of its own sub-command only.

A user mistake (`DessamError`) is printed as one line, without a traceback, with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional

from ..errors import DessamError
from .help_texts import Parser

# each sub-command and its module, in the order `dessam --help` lists them
COMMANDS = {"train": "train", "label": "label", "predict": "predict", "eval": "evaluate", "compare": "compare",
            "synth": "synth", "convert": "convert", "validate": "validate", "fetch-sam": "fetch_sam", "demo": "demo",
            "pretrain-teacher": "pretrain_teacher", "pretrain-model": "pretrain_model",
            "train-size-head": "train_size_head", "export": "export",
            "bench": "bench"}


def command_module(name: str):
    return importlib.import_module(f".{COMMANDS[name]}", __name__)


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser of every sub-command, or of `only` (one sub-command's module is then all a run loads)."""
    parser = Parser(prog="dessam", description="Nucleus instance segmentation trained from boxes (DES-SAM).")
    parser.add_argument("--version", action="version", version=f"dessam {__import__('dessam').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS if only is None else [only]:
        command_module(name).add_parser(sub)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    named = next((word for word in argv if not word.startswith("-")), None)
    parser = build_parser(named if named in COMMANDS else None)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DessamError as exc:
        print(f"dessam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dessam: interrupted", file=sys.stderr)
        return 130
