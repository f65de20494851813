"""What several sub-commands share: the model they run (named, bundled, on an engine), the licence
lines they print, and the flags they define alike."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from ..errors import DessamError

PERMISSIVE_MODEL = "--model pretrained-permissive"


PERMISSIVE_SAM = "--sam default-permissive"


NUCLEUS_SIZE_HELP = ("the images' typical nucleus diameter in pixels: models that bring every image to one nucleus "
                     "size (model.input_scaling nucleus, the cpu preset's) then skip their estimate; others say it "
                     "plays no part")


def model_path(args) -> str:
    """--model, or the bundled pretrained model (said in one line on stderr, with its licence); a
    model whose weights are non-commercial is named so in one line."""
    from ..inference.engines import model_file_terms
    from ..models.bundled import PRETRAINED_NAME, bundled_models, model_card, resolve_model

    if args.model:
        path = resolve_model(args.model)
        if path.is_file():
            terms = model_file_terms(path)
            if terms.non_commercial:
                print(f"dessam: {terms.notice(f'the model {path.name}', PERMISSIVE_MODEL)}", file=sys.stderr)
        return str(args.model)
    path = bundled_models().get(PRETRAINED_NAME)
    if path is None:
        raise DessamError("no --model given and this installation has no bundled pretrained model; "
                          "pass --model RUN/model.pt")
    terms = model_file_terms(path)
    licence = terms.notice("it", PERMISSIVE_MODEL) if terms.non_commercial else terms.words
    print(f"dessam: using the bundled pretrained model {path.name} ({licence}; model card: {model_card(path)}); "
          f"pass --model RUN/model.pt for your own", file=sys.stderr)
    return str(path)


def input_size(model) -> int:
    """The input size of a model file (or a bundled model's name), read without building the model."""
    from ..inference.engines import model_input_size
    from ..models.bundled import resolve_model

    return model_input_size(resolve_model(model))


def say_reference_terms(model) -> None:
    """One line on stderr when `eval --baselines` adds the row of a non-commercial bundled model."""
    from ..models.bundled import PRETRAINED_NAME, bundled_models, resolve_model
    from ..models.model_file import read_model_file
    from ..models.weights_terms import model_terms

    bundled = bundled_models().get(PRETRAINED_NAME)
    if bundled is None or resolve_model(model).resolve() == bundled.resolve():
        return
    terms = model_terms(read_model_file(bundled))
    if terms.non_commercial:
        print(f"dessam: the row 'pretrained (bundled)' that --baselines adds comes from {terms.words} weights: "
              "research use only", file=sys.stderr)


def say_teacher_terms(name: str, checkpoint) -> None:
    """One line on stderr when the teacher `--sam NAME` is under non-commercial terms."""
    from ..models.default_teacher import is_default_teacher
    from ..models.weights_terms import sam_terms

    if not (is_default_teacher(name) or (checkpoint and Path(checkpoint).is_file())):
        return
    terms = sam_terms(name, checkpoint)
    if terms.non_commercial:
        print(f"dessam: {terms.notice(f'the teacher {name}, and any model trained on it,', PERMISSIVE_SAM)}",
              file=sys.stderr)


def load(args, path: Optional[str] = None):
    """The model of --model (`path` when `model_path` gave it already) where the runtime flags say."""
    from ..config.runtime import Runtime
    from ..inference.engines import load_predictor

    return load_predictor(path or model_path(args), Runtime.from_args(args), args.sam_checkpoint,
                          getattr(args, "image_size", None), progress=not args.quiet)


def check_scale_options(args) -> None:
    """--pixel-size and --nucleus-size refused up front when they cannot be sizes."""
    from ..geometry.scale import check_nucleus_size, check_pixel_size

    check_pixel_size(args.pixel_size)
    check_nucleus_size(getattr(args, "nucleus_size", None))


READOUT_FLAGS = {"score_threshold": "--score-threshold", "max_detections": "--max-detections", "min_size": "--min-size"}


def check_readout_options(args) -> None:
    """--score-threshold, --max-detections and --min-size refused up front by the read-out's own
    checks (`Postprocess`), each in one line naming its flag."""
    from ..config import Postprocess

    for name, flag in READOUT_FLAGS.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        try:
            Postprocess(**{name: value})
        except DessamError as error:
            raise DessamError(f"{flag} {value}: {str(error).split(': ', 1)[1]}") from None


def scale_note(model, args) -> None:
    """The one line that says how --pixel-size and --nucleus-size bring images to this model."""
    note = model.scale_note(args.pixel_size, getattr(args, "nucleus_size", None))
    if note:
        print(f"dessam: {note}", file=sys.stderr)


def model_or_sam(args, missing: str) -> None:
    """A command that takes a model or SAM alone gets exactly one of them (`missing`: the error without)."""
    if args.model is None and args.sam is None:
        raise DessamError(missing)
    if args.model is not None and args.sam is not None:
        raise DessamError(f"{args.model}: give --model or --sam, not both (the model names its own SAM)")


def add_engine_options(parser):
    """--device and --engine: where a model runs (`Runtime`), for every command that runs one."""
    from ..config.runtime import ENGINES

    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="torch, or onnx: the model's graphs run by ONNX Runtime (exported on first use into the "
                             "user's cache); auto (default): onnx on a CPU when the ONNX extra is installed, else torch")


def add_model_options(parser):
    from ..config.runtime import RUNTIME_PRECISIONS

    parser.add_argument("--model", help="a trained model (RUN/model.pt); default: the bundled pretrained model")
    parser.add_argument("--sam-checkpoint", help="the SAM checkpoint the model was trained with, if not found")
    add_engine_options(parser)
    parser.add_argument("--precision", choices=RUNTIME_PRECISIONS, default="auto",
                        help="auto: bf16 encoder / fp16 decoder on CUDA, fp32 on CPU; fp32 = the reference path; "
                             "int8: the ONNX engine's dynamically quantised graphs")
    add_threads(parser)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the encoder and decoder (default: on for large CUDA jobs)")


THREADS_HELP = "CPU threads (default: one per core)"


def add_threads(parser) -> None:
    parser.add_argument("--threads", type=int, help=THREADS_HELP)


def use_threads_flag(args) -> None:
    """--threads of a command that trains: PyTorch's CPU threads, refused below 1 before any work."""
    from ..config.runtime import Runtime
    from ..inference.engines import use_threads

    use_threads(Runtime(threads=args.threads))


def add_quiet(parser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def command_line() -> str:
    """The command as typed, for model cards and logs."""
    return " ".join(["dessam"] + sys.argv[1:])
