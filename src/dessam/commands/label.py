"""`dessam label`: write a mask for every annotated box (COCO), with scores and a review sheet."""

from __future__ import annotations

from ..errors import DessamError
from .help_texts import constant_default
from .shared import add_engine_options, add_quiet, input_size, model_or_sam, model_path, say_teacher_terms

NAME = "label"


def run(args) -> int:
    from ..config.runtime import Runtime
    from ..inference.engines import load_predictor, load_teacher_predictor
    from ..labeling.label import label_dataset

    model_or_sam(args, f"{args.data}: give --model RUN/model.pt (the trained student) or --sam NAME (the frozen "
                        "teacher, e.g. --sam default) to label its boxes")
    if args.input_scale is not None and not args.input_scale > 0:
        raise DessamError(f"--input-scale {args.input_scale}: use a positive factor")
    from ..geometry.tiling import check_tiling
    from ..models.sam import sam_input_size

    path = model_path(args) if args.model is not None else None
    check_tiling(args.image_size or (input_size(path) if path else sam_input_size(args.sam, args.sam_checkpoint)),
                 args.overlap)  # before anything is loaded or exported
    runtime = Runtime.from_args(args)
    if args.model is not None:
        model = load_predictor(path, runtime, args.sam_checkpoint, args.image_size, input_scale=args.input_scale,
                               progress=not args.quiet)
    else:
        say_teacher_terms(args.sam, args.sam_checkpoint)
        model = load_teacher_predictor(args.sam, runtime, args.sam_checkpoint, args.image_size,
                                       input_scale=1.0 if args.input_scale is None else args.input_scale,
                                       progress=not args.quiet)
    options = {key: value for key, value in (("outside_margin", args.outside_margin),
                                             ("outside_limit", args.outside_fraction),
                                             ("review_count", args.review_count)) if value is not None}
    done = label_dataset(model, args.data, args.images, args.out, review_dir=args.review,
                        use_token=args.model is not None, overlap=args.overlap, progress=not args.quiet, **options)
    where = f"label_flags in {done.out_json}" + (f" and {done.review[1]}" if done.review else "")
    print(f"{done.labelled} boxes of {done.images} images labelled into {done.out_json} "
          f"({'student' if args.model else 'teacher'} masks); {done.empty} empty, {done.outside} leaving their box "
          f"(listed in {where})" + (f"; {done.crowd} crowd annotations copied unchanged" if done.crowd else ""))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(NAME, help="write a mask for every annotated box (COCO), with scores and a review sheet")
    p.add_argument("--data", required=True, help="COCO JSON with boxes")
    p.add_argument("--images", required=True, help="folder of the images named in the JSON")
    p.add_argument("--out", required=True, help="COCO JSON to write, with an RLE mask per box")
    p.add_argument("--model", help="a trained model (RUN/model.pt): masks of the student and its learned token")
    p.add_argument("--sam", help="or the frozen teacher: vit_b | vit_l | vit_h | default | default-permissive, or a checkpoint path")
    p.add_argument("--sam-checkpoint", help="the SAM checkpoint (.pth) of --sam, or of the model if not found")
    p.add_argument("--review", help="folder for the review sheet (review.png, review.csv)")
    p.add_argument("--review-count", type=int, help=constant_default(
        "masks in the review mosaic (default {default})", "labeling.label", "REVIEW_COUNT"))
    p.add_argument("--image-size", type=int, help="model input size S (default: the model's or the SAM's own)")
    p.add_argument("--input-scale", type=float,
                   help="resize images by this factor; larger ones are cut into windows of the input size "
                        "(default: the model's training scale; the teacher: 1)")
    p.add_argument("--overlap", type=int, default=64, help="window overlap in pixels (default %(default)s)")
    add_engine_options(p)
    p.add_argument("--outside-fraction", type=float,
                   help=constant_default("flag masks with more than this share of their pixels outside the grown box "
                                         "(default {default})", "labeling.label", "OUTSIDE_FRACTION"))
    p.add_argument("--outside-margin", type=float,
                   help=constant_default("the box grows by this fraction of its width and height on each side "
                                         "(default {default})", "labeling.label", "OUTSIDE_MARGIN"))
    add_quiet(p)
    p.set_defaults(func=run)
