"""`dessam convert`: convert annotations to COCO JSON."""

from __future__ import annotations

from .help_texts import constant_default

NAME = "convert"


def run(args) -> int:
    from ..data.convert import convert

    options = {"classes": args.classes, "tile_size": args.tile_size, "pixel_size_um": args.pixel_size,
               "tiles_dir": args.tiles}
    print(convert(args.format, args.src, args.images, args.out, mat_key=args.mat_key, label_suffix=args.label_suffix,
                  **{k: v for k, v in options.items() if v is not None}))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(NAME, help="convert annotations to COCO JSON")
    p.add_argument("--from", dest="format", required=True,
                   choices=("labels", "labelme", "mat", "npy", "voc", "yolo", "coco", "geojson", "csv", "dsb",
                            "aperio-xml"))
    p.add_argument("src", help="annotation file or folder (dsb: the folder of ID/images, ID/masks folders)")
    p.add_argument("--images", help="folder holding the images (dsb: default the source folder)")
    p.add_argument("--out", required=True, help="COCO JSON to write")
    p.add_argument("--mat-key", help=constant_default("variable name in .mat files (default {default})", "data.convert_maps",
                                                         "MAT_KEY"))
    p.add_argument("--label-suffix", help="suffix of label images after the image stem")
    p.add_argument("--classes", nargs="+", metavar="NAME",
                   help="keep only these classes (labelme, voc, geojson: names; yolo: class numbers)")
    p.add_argument("--pixel-size", type=float, help="slides: microns per pixel of the training tiles "
                   "(default: the slide's own, at full resolution)")
    p.add_argument("--tile-size", type=int, help=constant_default(
        "slides: side of the training tiles in pixels (default {default})", "data.convert_shapes", "TILE_SIZE"))
    p.add_argument("--tiles", help="slides: folder for the training tiles (default: OUT_tiles beside --out)")
    p.set_defaults(func=run)
