"""What a teacher pre-training run depends on, besides its corpus: the `Recipe` and the encoders it may
choose from.

A recipe is composed once, as a run's `Config` is (`compose_recipe`): the defaults, then a YAML file of
recipe settings (`dessam pretrain-teacher --config`, any subset of keys), then single settings (`--set
KEY=VALUE` and the flags); it is saved with the run and never edited.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from ..config import coerce_setting
from ..errors import DessamError


ARCH_SIZES = {          # encoders to choose from (`--arch`); all keep SAM's decoder at width 64
    "small": {"widths": [16, 32, 64, 128], "depths": [1, 2, 2, 2]},
    "medium": {"widths": [24, 48, 96, 160], "depths": [1, 2, 3, 3]},
    "conv": {"encoder": "conv", "local_margin": 4},  # the first bundled teacher's stride-8 encoder (3.7 MB), for comparison
}


@dataclass(frozen=True)
class Recipe:
    """Everything a teacher pre-training run depends on, besides the corpus."""

    steps: int = 6000
    batch_size: int = 8
    crop: int = 192
    max_prompts: int = 12
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 200
    seed: int = 0
    arch: str = "small"
    margins: tuple = (2, 6)        # tokens of window margin, drawn per crop
    box_noise: float = 0.08        # std of each box edge's error, as a share of the box side
    box_noise_wide: float = 0.2    # ... for the share `wide_errors` of boxes that a detector gets badly wrong
    wide_errors: float = 0.15
    nucleus_px: Optional[float] = None  # rescale around the size that makes the median nucleus this wide (None: native)
    eval_every: int = 500
    val_limit: int = 24            # validation images per dataset (the first ones, in name order)
    views_from: Optional[str] = None  # a teacher file or bundled name: train per-box views on top of it
    view_size: int = 64            # pixels across each box's view (views only)
    view_context: float = 2.0      # each view spans this many times its box's longer side (views only)

    def __post_init__(self):
        if self.arch not in ARCH_SIZES:
            raise DessamError(f"--arch {self.arch}: choose {' or '.join(ARCH_SIZES)}")
        for name in ("steps", "batch_size", "crop", "max_prompts", "eval_every"):
            if int(getattr(self, name)) < (0 if name == "steps" else 1):
                wanted = "0 or more" if name == "steps" else "a positive number"
                raise DessamError(f"--{name.replace('_', '-')} {getattr(self, name)}: give {wanted}")
        if self.crop % 16:
            raise DessamError(f"--crop {self.crop}: give a multiple of 16")
        if not self.lr > 0:
            raise DessamError(f"--lr {self.lr}: give a positive learning rate")
        if self.views_from is not None and (self.view_size % 16 or self.view_size < 16):
            raise DessamError(f"--view-size {self.view_size}: give a multiple of 16")
        if self.views_from is not None and self.arch == "conv":
            raise DessamError("--views-from: the view encoder is a U-Net; choose --arch small or medium")
        object.__setattr__(self, "margins", tuple(int(m) for m in self.margins))


def compose_recipe(file=None, overrides: Optional[Mapping[str, Any]] = None) -> Recipe:
    """The defaults, then the YAML `file`'s settings, then `overrides` ({"key": value}, in order), each
    value read as the type of the default it replaces; an unknown key is an error naming the known ones."""
    values = {f.name: getattr(Recipe(), f.name) for f in dataclasses.fields(Recipe)}
    layers = []
    if file is not None:
        from ..yaml_file import read_yaml

        layers.append((read_yaml(file, "recipe file") or {}, str(file)))
    layers.append((overrides or {}, "command line"))
    for data, source in layers:
        if not isinstance(data, Mapping):
            raise DessamError(f"{source}: expected a mapping of recipe settings, e.g. steps: 6000")
        for key, value in data.items():
            name = str(key).replace("-", "_")
            if name not in values:
                raise DessamError(f"{source}: unknown recipe setting '{key}'; known: {', '.join(values)}")
            values[name] = coerce_setting(value, getattr(Recipe(), name), f"{source}: {name}")
    return Recipe(**values)
