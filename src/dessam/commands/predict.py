"""`dessam predict`: segment nuclei in images, folders or globs."""

from __future__ import annotations

import sys

from .help_texts import constant_default, model_default
from .shared import (NUCLEUS_SIZE_HELP, add_model_options, add_quiet, check_readout_options, check_scale_options,
                     input_size, load, model_path, scale_note)

NAME = "predict"


def run(args) -> int:
    from dataclasses import replace

    from ..outputs.files import FORMATS, check_options, expand_inputs, parse_shard, predict_files, writable_folder
    from ..outputs.slides import SlideOptions

    formats = FORMATS if args.formats is None else tuple(f for f in args.formats.split(",") if f)
    check_scale_options(args)
    check_readout_options(args)
    paths = expand_inputs(args.inputs)  # a wrong input, option, model or output is told before the model loads
    slide_options = SlideOptions(skip_glass=not args.no_skip_glass, compress_geojson=args.gzip, resume=args.resume,
                                 roi=args.roi,
                                 tissue={"min_od": args.tissue_threshold} if args.tissue_threshold is not None else {})
    path = model_path(args)
    check_options(args.image_size or input_size(path), paths, args.pixel_size, args.overlap, slide_options)
    writable_folder(args.out, keep=False)
    model = load(args, path)
    overrides = {key: value for key, value in (("score_threshold", args.score_threshold),
                                               ("max_detections", args.max_detections)) if value is not None}
    postprocess = replace(model.postprocess, **overrides)
    tile = None if args.tile == "auto" else args.tile == "on"
    scale_note(model, args)
    done = predict_files(model, args.inputs, args.out, formats, overwrite=args.overwrite,
                        pixel_size_um=args.pixel_size, tile=tile, overlap=args.overlap, progress=not args.quiet,
                        postprocess=postprocess, slide_options=slide_options, shard=parse_shard(args.shard),
                        nucleus_size=args.nucleus_size)
    print(f"{len(done.written)} images predicted into {args.out}"
          + (f", {len(done.skipped)} kept existing outputs (use --overwrite)" if done.skipped else ""))
    if done.failed:
        print(f"{len(done.failed)} images failed:", file=sys.stderr)
        for path, message in done.failed:
            print(f"  {path}: {message}", file=sys.stderr)
    return done.exit_status


def add_parser(sub) -> None:
    p = sub.add_parser(NAME, help="segment nuclei in images, folders or globs")
    add_model_options(p)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--formats", help=constant_default("comma-separated outputs (default all: {default})",
                                                       "outputs.files", "FORMATS"))
    p.add_argument("--tile", choices=("auto", "on", "off"), default="auto",
                   help="cut large fields into tiles at the training scale (default: auto)")
    p.add_argument("--overlap", type=int, default=64, help="tile overlap in pixels (default %(default)s)")
    p.add_argument("--pixel-size", type=float,
                   help="the images' pixel size in microns: brings them to the model's scale, measurements in um")
    p.add_argument("--nucleus-size", type=float, metavar="PX",
                   help=NUCLEUS_SIZE_HELP)
    p.add_argument("--score-threshold", type=float,
                   help=model_default("detection score threshold", "model.postprocess.score_threshold"))
    p.add_argument("--max-detections", type=int,
                   help=model_default("most nuclei per image or tile", "model.postprocess.max_detections"))
    p.add_argument("--image-size", type=int, help="run at another input size than trained")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--roi", help="whole slides: only this region, x,y,w,h in full-resolution pixels")
    p.add_argument("--no-skip-glass", action="store_true",
                   help="whole slides: run every window, not only those touching the tissue/cell mask")
    p.add_argument("--tissue-threshold", type=float,
                   help=constant_default("whole slides: the lowest optical density that counts as cells "
                                         "(default {default})", "data.tissue", "MIN_OD"))
    p.add_argument("--gzip", action="store_true", help="whole slides: write NAME.geojson.gz")
    p.add_argument("--resume", action="store_true", help="whole slides: continue an interrupted run from its last row")
    p.add_argument("--shard", metavar="K/N", help="only the K-th of every N inputs (array jobs: K = the task index)")
    add_quiet(p)
    p.set_defaults(func=run)
