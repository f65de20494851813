"""`dessam synth`: write a synthetic cervical cytology dataset, or a synthetic whole slide."""

from __future__ import annotations

from pathlib import Path

from ..errors import DessamError

NAME = "synth"


SLIDE_SIDE = 8192   # dessam synth --slide: the default side of the synthetic slide


def run(args) -> int:
    from ..data.synth import make_dataset

    if args.slide:
        return _synth_slide(args)
    if not args.out:
        raise DessamError("give --out DIR for a dataset of fields, or --slide FILE for a whole slide")
    out = make_dataset(args.out, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, scene=args.scene,
                       shift=args.shift, seed=args.seed, size=args.size)
    print(f"synthetic cytology written to {out} (preview: {Path(out) / 'preview.png'})")
    return 0


def _synth_slide(args) -> int:
    from ..data.synth_slide import make_synthetic_slide, truth_paths
    from ..outputs.slide_writers import GeoJSONWriter

    if args.out:
        raise DessamError(f"--out {args.out} and --slide {args.slide}: give one (--out DIR for fields, --slide FILE "
                          "for a whole slide)")
    if len(args.slide_size) not in (1, 2):
        raise DessamError(f"--slide-size {' '.join(map(str, args.slide_size))}: give WIDTH HEIGHT or one side in pixels")
    width, height = args.slide_size * (3 - len(args.slide_size))
    if min(width, height) < 1 or not args.pixel_size > 0 or not 0 <= args.cell_fraction <= 0.5:
        raise DessamError("--slide-size and --pixel-size must be positive and --cell-fraction between 0 and 0.5; "
                          "fix the numbers")
    labels, boxes, geojson = truth_paths(args.slide)
    with GeoJSONWriter(geojson) as truth:
        result = make_synthetic_slide(args.slide, width, height, args.pixel_size, on_nucleus=truth.add,
                                      cell_fraction=args.cell_fraction, seed=args.seed, layout=args.slide_format)
    print(result)
    print(f"ground truth: {labels} (label image), {boxes} (boxes), {geojson} (QuPath: File > Import objects)")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(NAME, help="write a synthetic cervical cytology dataset, or a synthetic whole slide")
    p.add_argument("--out", help="dataset folder")
    p.add_argument("--n-train", type=int, default=100)
    p.add_argument("--n-val", type=int, default=10)
    p.add_argument("--n-test", type=int, default=20)
    p.add_argument("--scene", choices=("patch", "cluster", "mixed"), default="mixed")
    p.add_argument("--shift", action="store_true", help="another stain palette, scale, blur and noise")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256, help="field size in pixels")
    p.add_argument("--slide", metavar="FILE", help="write one pyramidal whole slide instead (.svs, .tif or .ome.tif), "
                   "its ground truth beside it")
    p.add_argument("--slide-size", nargs="+", type=int, default=[SLIDE_SIDE], metavar="PX",
                   help=f"slide WIDTH HEIGHT in pixels, or one side of a square (default {SLIDE_SIDE})")
    p.add_argument("--pixel-size", type=float, default=0.5,
                   help="microns per pixel written in the slide (default %(default)s, at which the synthetic cells "
                        "are life-size)")
    p.add_argument("--cell-fraction", type=float, default=0.03, help="share of the slide covered by cell groups "
                   "(default %(default)s; the rest is glass)")
    p.add_argument("--slide-format", choices=("svs", "ome"),
                   help="Aperio SVS layout or OME-TIFF (default: OME-TIFF for .ome.tif names, else SVS)")
    p.set_defaults(func=run)
