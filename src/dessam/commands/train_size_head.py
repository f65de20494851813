"""`dessam train-size-head`: train a nucleus-scaled model's size head further on a corpus."""

from __future__ import annotations

from .help_texts import constant_default
from .shared import add_quiet

NAME = "train-size-head"


def run(args) -> int:
    from ..pretrain.size_head import train_size_head_further

    result = train_size_head_further(args.model, args.corpus, args.out, args.steps, args.lr, args.seed,
                                     args.teacher, progress=not args.quiet)
    print(f"model written to {result.model_path}; size-head loss (absolute error of log size) "
          f"{result.first_loss:.3f} over the first 100 steps, {result.last_loss:.3f} over the last 100")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(NAME, help="train a nucleus-scaled model's size head further on a corpus (a new model file)")
    p.add_argument("model", help="model.pt (or a bundled model's name) whose size head goes on training")
    p.add_argument("--corpus", required=True, help="corpus manifest (YAML), as for pretrain-model")
    p.add_argument("--out", required=True, help="the new model file (the model, with the head trained further)")
    p.add_argument("--steps", type=int, required=True, help="training steps of the head (8 crops each)")
    p.add_argument("--lr", type=float, help=constant_default(
        "peak learning rate, one cycle (default {default})", "pretrain.size_head", "FURTHER_LR"))
    p.add_argument("--seed", type=int, default=1, help="seed of the crops drawn (default %(default)s)")
    p.add_argument("--teacher", help="the SAM file the model runs on, when not found by its record")
    add_quiet(p)
    p.set_defaults(func=run)
