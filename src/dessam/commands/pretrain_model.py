"""`dessam pretrain-model`: pre-train a whole DES-SAM model on a corpus, from its boxes only."""

from __future__ import annotations

from .help_texts import FromConfig, constant_default, preset_setting
from .shared import add_quiet, add_threads, command_line, use_threads_flag

NAME = "pretrain-model"


def run(args) -> int:
    from ..config import parse_set
    from ..pretrain.model import pretrain_model
    from ..pretrain.size_head import SIZE_STEPS

    use_threads_flag(args)
    result = pretrain_model(args.corpus, args.teacher, args.out, max_iters=args.max_iters, epochs=args.epochs,
                            synthetic_images=args.synthetic_images, seed=args.seed, resume=args.resume,
                            command=command_line(), progress=not args.quiet, init=args.init,
                            config_file=args.config, overrides=parse_set(args.set),
                            size_steps=SIZE_STEPS if args.size_steps is None else args.size_steps)
    scores = "; ".join(f"{name}: AJI {m['aji']:.3f}, detection F1 {m['f1']:.3f}" for name, m in result.validation.items())
    print(f"model written to {result.model_path}; held-out sets: {scores or result.unscored or 'none'}; "
          f"model card: {result.card_path}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(NAME, help="pre-train a whole DES-SAM model on a corpus, from its boxes only")
    p.add_argument("--corpus", required=True, help="corpus manifest (YAML), as for pretrain-teacher")
    p.add_argument("--teacher", required=True, help="the default-teacher file to train on (pretrain-teacher's teacher.pt)")
    p.add_argument("--out", required=True, help="run folder (model.pt, model.md, corpus/, val/, checkpoints/)")
    p.add_argument("--max-iters", type=int, help="stop after this many iterations (default: the epochs decide)")
    p.add_argument("--epochs", type=int, help=FromConfig(
        lambda: f"epochs over the corpus (default {preset_setting('cpu', 'train.epochs')}, the cpu preset's)"))
    p.add_argument("--synthetic-images", type=int, default=200,
                   help="scenes drawn per synthetic dataset (default %(default)s)")
    p.add_argument("--init", default="scratch", help="where the detector starts: scratch (default), or a model.pt "
                   "trained on this teacher or on the teacher it was built on (--views-from)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", help="YAML file of settings on top of the cpu preset")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="one setting on top of the cpu preset and --config (repeatable), e.g. train.copies=4")
    p.add_argument("--size-steps", type=int, help=constant_default(
        "steps of the nucleus-size head's training, none when zero (nucleus scaling; default {default})", "pretrain.size_head",
        "SIZE_STEPS"))
    p.add_argument("--resume", action="store_true", help="continue OUT/checkpoints/last.pt")
    add_threads(p)
    add_quiet(p)
    p.set_defaults(func=run)
