"""`dessam eval`: score a model on a masked test set (AJI, PQ, Dice, Hausdorff, AP, ...)."""

from __future__ import annotations

from pathlib import Path

from .help_texts import model_default
from .shared import (NUCLEUS_SIZE_HELP, add_model_options, add_quiet, check_readout_options, check_scale_options,
                     model_path, say_reference_terms, scale_note)

NAME = "eval"


def run(args) -> int:
    from ..config.runtime import Runtime
    from ..evaluation.evaluate import evaluate_model_file

    check_scale_options(args)
    check_readout_options(args)
    model = model_path(args)
    if args.baselines and args.model:
        say_reference_terms(model)
    evaluate_model_file(model, args.data, args.images, args.out, sam_checkpoint=args.sam_checkpoint,
                        runtime=Runtime.from_args(args), baselines=args.baselines,
                        score_threshold=args.score_threshold, pixel_size_um=args.pixel_size,
                        remove_small=not args.no_small_removal, min_size=args.min_size, progress=not args.quiet,
                        nucleus_size=args.nucleus_size, on_model=lambda model: scale_note(model, args))
    print((Path(args.out) / "metrics.md").read_text())
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(NAME, help="score a model on a masked test set (AJI, PQ, Dice, Hausdorff, AP, ...)")
    add_model_options(p)
    p.add_argument("--data", required=True, help="COCO JSON with masks")
    p.add_argument("--images", required=True)
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--baselines", action="store_true",
                   help="also box-as-mask, box-otsu and training-free SAM from the same detections, and every "
                        "mask source from the ground-truth boxes")
    p.add_argument("--score-threshold", type=float,
                   help=model_default("detection score threshold", "model.postprocess.score_threshold"))
    p.add_argument("--pixel-size", type=float, help="the test images' pixel size in microns (brings them to the model's scale)")
    p.add_argument("--nucleus-size", type=float, metavar="PX",
                   help=NUCLEUS_SIZE_HELP)
    p.add_argument("--no-small-removal", action="store_true", help="keep holes and islands under --min-size")
    p.add_argument("--min-size", type=int, help=model_default("holes and islands under this many pixels are removed",
                                                               "model.postprocess.min_size", " px"))
    add_quiet(p)
    p.set_defaults(func=run)
