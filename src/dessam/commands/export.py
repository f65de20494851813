"""`dessam export`: write a model's networks as ONNX graphs with a manifest (docs/onnx.md)."""

from __future__ import annotations

from .shared import model_or_sam

NAME = "export"


def run(args) -> int:
    from ..inference.export import check_export, export_model

    model_or_sam(args, f"{args.out}: give the model to export (MODEL: a model.pt or a bundled model's name), "
                        "or --sam NAME for SAM alone")
    import torch

    from ..inference.loading import load_model, load_teacher
    from ..models.bundled import resolve_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model is not None:
        path = resolve_model(args.model)
        predictor = load_model(path, "cpu", args.sam_checkpoint, args.image_size)
    else:
        path, predictor = None, load_teacher(args.sam, args.sam_checkpoint, "cpu", args.image_size)
    manifest = export_model(predictor, args.out, model_path=path)
    print(f"graphs and manifest written to {manifest.parent} ({', '.join(sorted(p.name for p in manifest.parent.glob('*.onnx')))})")
    if args.check:
        from ..data.images import read_image

        print(f"\nEach graph against PyTorch on {args.check} (the same inputs for both):\n")
        print("| graph | compared | largest absolute difference | |")
        print("|---|---|---:|---|")
        for graph, what, difference, note in check_export(predictor, manifest.parent, read_image(args.check), args.threads):
            print(f"| {graph} | {what} | {difference:.3g} | {note} |")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(NAME, help="write a model's networks as ONNX graphs with a manifest (docs/onnx.md)")
    p.add_argument("model", nargs="?", metavar="MODEL", help="a model.pt, or a bundled model's name (pretrained)")
    p.add_argument("--sam", help="or SAM alone: default | default-permissive | vit_b | ..., to segment given boxes")
    p.add_argument("--sam-checkpoint", help="the SAM checkpoint of --sam, or of the model if not found")
    p.add_argument("--out", required=True, help="folder for the graphs and manifest.json")
    p.add_argument("--image-size", type=int, help="model input size S (default: the model's own)")
    p.add_argument("--check", metavar="IMAGE", help="run each graph against PyTorch on this image and print the "
                   "largest differences")
    p.add_argument("--threads", type=int, help="CPU threads")
    p.set_defaults(func=run)
