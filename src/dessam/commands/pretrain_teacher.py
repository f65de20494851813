"""`dessam pretrain-teacher`: pre-train the default teacher on a corpus of nucleus datasets."""

from __future__ import annotations

from ..errors import DessamError
from .help_texts import recipe_default
from .shared import add_quiet, command_line

NAME = "pretrain-teacher"


FLAGS = ("steps", "batch_size", "crop", "max_prompts", "lr", "seed", "arch", "eval_every", "nucleus_px", "views_from",
         "view_size", "view_context")


def run(args) -> int:
    from ..config import parse_set
    from ..pretrain.recipe import compose_recipe
    from ..pretrain.teacher import pretrain_teacher

    options = {key: getattr(args, key) for key in FLAGS if getattr(args, key) is not None}
    if args.resume and (options or args.config or args.set):
        given = sorted(options) + (["--config"] if args.config else []) + (["--set"] if args.set else [])
        raise DessamError(f"--resume continues {args.out} with its own recipe; leave out {', '.join(given)}")
    recipe = None if args.resume else compose_recipe(args.config, {**parse_set(args.set), **options})
    result = pretrain_teacher(args.corpus, args.out, recipe, resume=args.resume,
                              device=args.device, threads=args.threads, command=command_line(),
                              progress=not args.quiet)
    scores = ", ".join(f"{name} {value:.3f}" for name, value in result.validation.items())
    print(f"teacher written to {result.teacher_path} after {result.steps_done} steps; held-out box-prompt IoU: "
          f"{scores}; model card: {result.card_path}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(NAME, help="pre-train the default teacher on a corpus of nucleus datasets")
    p.add_argument("--corpus", required=True, help="corpus manifest (YAML: each dataset's path, format, licence, weight)")
    p.add_argument("--out", required=True, help="run folder (teacher.pt, teacher.md, log.csv, checkpoints/)")
    p.add_argument("--steps", type=int, help=recipe_default(
        "training steps (default {default}; the step count, not the clock, decides the result)", "steps"))
    p.add_argument("--batch-size", type=int, help=recipe_default("crops per step (default {default})", "batch_size"))
    p.add_argument("--crop", type=int, help=recipe_default("crop side in pixels, a multiple of 16 (default {default})",
                                                           "crop"))
    p.add_argument("--max-prompts", type=int, help=recipe_default("boxes prompted per crop (default {default})",
                                                                  "max_prompts"))
    p.add_argument("--lr", type=float, help=recipe_default("peak learning rate (AdamW, cosine schedule; default {default})",
                                                           "lr"))
    p.add_argument("--arch", choices=("small", "medium", "conv"),
                   help="encoder: small (default), medium, or conv (the stride-8 encoder of the first teacher)")
    p.add_argument("--seed", type=int)
    p.add_argument("--eval-every", type=int, help=recipe_default(
        "validate and save every this many steps (default {default})", "eval_every"))
    p.add_argument("--nucleus-px", type=float, help="rescale each image around the size that makes its median "
                   "nucleus this many pixels wide (default: around its own scale)")
    p.add_argument("--views-from", metavar="TEACHER",
                   help="train a teacher that segments each box on a view of its own, on top of this teacher "
                        "(a bundled name or a teacher.pt, whose whole-image encoder it keeps for the detector)")
    p.add_argument("--view-size", type=int, help=recipe_default(
        "pixels across each box's view, a multiple of 16 (default {default})", "view_size"))
    p.add_argument("--view-context", type=float, help=recipe_default(
        "each view spans this many times its box's longer side (default {default})", "view_context"))
    p.add_argument("--config", help="YAML file of recipe settings (any of OUT/recipe.yaml's keys; the flags go on top)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="one recipe setting on top of --config (repeatable), e.g. warmup=100; the flags go on top")
    p.add_argument("--resume", action="store_true", help="continue OUT/checkpoints/last.pt with its recipe")
    p.add_argument("--threads", type=int, help="CPU threads (1 gives bit-identical results across machines)")
    p.add_argument("--device", default="cpu")
    add_quiet(p)
    p.set_defaults(func=run)
