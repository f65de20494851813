"""`dessam train`: train DES-SAM from box annotations (COCO)."""

from __future__ import annotations

from .help_texts import preset_default
from ..config.presets import REGISTRY
from .shared import PERMISSIVE_SAM, add_quiet, add_threads, command_line, say_teacher_terms, use_threads_flag

NAME = "train"


TRAIN_FLAGS = (("sam", "model.sam"), ("sam_checkpoint", "model.sam_checkpoint"), ("epochs", "train.epochs"),
               ("max_iters", "train.max_iters"), ("device", "train.device"), ("image_size", "model.image_size"),
               ("batch_size", "train.batch_size"), ("seed", "train.seed"), ("lr", "train.lr"),
               ("cache_dir", "train.cache_dir"), ("pixel_size", "train.pixel_size_um"),
               ("mask_weight", "loss.mask_weight"), ("init", "train.init"))


def run(args) -> int:
    from ..config import Config, parse_set
    from ..config.presets import implied_preset
    from ..training.train import train

    use_threads_flag(args)
    overrides = {key: getattr(args, flag) for flag, key in TRAIN_FLAGS if getattr(args, flag) not in (None, "")}
    if args.no_edge_loss:
        overrides["loss.edge_aware"] = False
    if args.no_prompt_token:
        overrides["model.prompt_token"] = False
    overrides.update(parse_set(args.set))
    preset = args.preset or (None if args.config else implied_preset(args.sam))
    config = Config.compose(preset, args.config or None, overrides)
    say_teacher_terms(config.model.sam, config.model.sam_checkpoint)
    if not args.skip_validation:
        from ..data.validate import raise_on_errors, validate_coco

        raise_on_errors(validate_coco(args.train, args.images, decode=False, progress=not args.quiet))
    result = train(config, args.train, args.images, args.out, val_json=args.val, resume=args.resume,
                   progress=not args.quiet)
    from ..training.distributed import current

    if not current().is_main:  # under torchrun only rank 0 reports (it alone writes)
        return 0
    print(f"model written to {result.model_path} ({result.iterations} iterations, {result.epochs_done} epochs; "
          f"{result.clipped_boxes} boxes clipped, {result.dropped_boxes} zero-size boxes dropped, "
          f"{result.skipped_nonfinite} non-finite steps skipped)")
    print(f"annotations supervised with masks: {result.mask_annotations}, with boxes: {result.box_annotations}")
    print(f"weights {result.start}")
    _write_card(result, args.train)
    return 0


def _write_card(result, train_json) -> None:
    """RUN/model.md: what the model was trained on, the licence its weights inherit, what it stores."""
    from ..atomic import write_text_atomic
    from ..models.model_file import read_model_file
    from ..training.model_card import trained_model_card

    card = result.model_path.with_suffix(".md")
    write_text_atomic(card, trained_model_card(read_model_file(result.model_path), result, train_json,
                                               command_line()))
    print(f"licence of {result.model_path}: {result.terms.words}"
          + (f" (research use only; {PERMISSIVE_SAM} trains an Apache-2.0 model)" if result.terms.non_commercial else "")
          + f"; model card: {card}")


def add_parser(sub) -> None:
    p = sub.add_parser(NAME, help="train DES-SAM from box annotations (COCO)")
    p.add_argument("--train", required=True,
                   help="COCO JSON with boxes; segmentations, where given, supervise their nuclei's masks")
    p.add_argument("--images", required=True, help="folder of the images named in the JSON")
    p.add_argument("--sam", help="vit_b | vit_l | vit_h | default | default-permissive | tiny, or an official checkpoint path")
    p.add_argument("--sam-checkpoint", help="path of the SAM checkpoint (.pth) for --sam vit_*")
    p.add_argument("--out", required=True, help="run folder (model.pt, log.csv, checkpoints/)")
    p.add_argument("--val", help="COCO JSON of validation images (losses written to RUN/val.csv)")
    p.add_argument("--epochs", type=int, help=preset_default("training epochs", "train.epochs"))
    p.add_argument("--max-iters", type=int, help="stop after this many iterations (default: the epochs decide)")
    p.add_argument("--batch-size", type=int, help=preset_default("images per step", "train.batch_size"))
    p.add_argument("--lr", type=float, help=preset_default(
        "learning rate at train.lr_reference_batch images per step (scaled to the real batch)", "train.lr"))
    p.add_argument("--image-size", type=int, help=preset_default("input size S; none: the SAM's own", "model.image_size"))
    p.add_argument("--seed", type=int)
    p.add_argument("--cache-dir", help="where to cache SAM embeddings (default RUN/cache)")
    p.add_argument("--pixel-size", type=float, help="the training images' pixel size in microns (recorded in the model)")
    p.add_argument("--mask-weight", type=float, help=preset_default(
        "distillation weight of the prompts supervised by a given mask", "loss.mask_weight"))
    p.add_argument("--init", metavar="auto|pretrained|scratch|MODEL.pt",
                   help="where the detector and token start: auto (default: the bundled pretrained model with "
                        "--sam default), pretrained, scratch (random, the authors' way) or a model.pt to fine-tune")
    p.add_argument("--preset", choices=sorted(REGISTRY), help="start from a named configuration: " + "; ".join(
        f"{name}: {REGISTRY[name].help}" for name in sorted(REGISTRY)))
    p.add_argument("--config", help="YAML file with model/loss/train settings (applied after --preset)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override one setting")
    p.add_argument("--no-edge-loss", action="store_true", help="ablation: train without the edge-aware loss")
    p.add_argument("--no-prompt-token", action="store_true", help="ablation: no learnable prompt token")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoints/last.pt")
    p.add_argument("--device", help="cpu, cuda or auto")
    add_threads(p)
    p.add_argument("--skip-validation", action="store_true", help="do not check the dataset before training")
    add_quiet(p)
    p.set_defaults(func=run)
