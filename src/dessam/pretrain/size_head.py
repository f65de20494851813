"""The nucleus-size head of a pre-trained model, trained on a corpus's instance maps.

`dessam pretrain-model` trains the head of a new model as its last step (`train_size_head`, `SIZE_STEPS`
steps). `dessam train-size-head MODEL --corpus CORPUS.yaml --out NEW.pt` trains the head of an existing
model further, from where it stands, with its own steps, learning rate and seed
(`train_size_head_further`): the head is small and its training cheap beside the detector's, and a head
that reads sizes better corrects every later prediction (`dessam.inference.nucleus_size`). Only the head
changes; the new file records the corpus's licence beside the model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..data.corpus import load_dataset, read_manifest, synthetic_scene
from ..errors import DessamError
from ..training.size_head import SizeSource

SIZE_STEPS = 1500   # steps of the head's training in `dessam pretrain-model` (`--size-steps`)
SIZE_LR = 1e-3      # its peak learning rate (one cycle)
FURTHER_LR = 5e-4   # the peak learning rate of `dessam train-size-head` (`--lr`): the head was trained once already


@dataclass
class HeadTraining:
    """What `train_size_head_further` did: the file written and the mean loss (absolute error of log
    size) of the first and the last 100 steps."""

    model_path: Path
    first_loss: float
    last_loss: float


def size_sources(datasets: list) -> list:
    """Where the nucleus-size head's crops come from: each dataset's training images with their
    instance maps (synthetic ones drawn anew), in the shares the manifest gives."""
    sources = []
    for dataset in datasets:
        if dataset.synthetic:
            generator = dataset.spec.generator
            draw = (lambda rng, g=generator: (lambda s: (s.image, s.labels))(synthetic_scene(g, rng)))
        elif dataset.train:
            samples = dataset.train
            draw = (lambda rng, samples=samples: (lambda s: (s.image, s.labels))(samples[int(rng.integers(len(samples)))]))
        else:
            continue
        sources.append(SizeSource(dataset.spec.name, draw, float(dataset.spec.weight)))
    return sources


def fit_and_write(predictor, model_path: Path, out_path: Path, datasets: list, steps: int, lr: float, seed: int,
                  progress: bool, terms=None) -> list:
    """Train the size head of `predictor` (loaded from the model file `model_path`) for `steps` steps from
    where it stands and write the model to `out_path` (the same file or a new one), with the licence
    `terms` when given; returns each step's loss."""
    from ..models.checkpoints import safe_torch_load
    from ..models.model_file import save_model_file
    from ..training.size_head import fit_size_head

    losses = fit_size_head(predictor.model, size_sources(datasets), steps=steps, lr=lr, seed=seed, progress=progress)
    payload = safe_torch_load(model_path)
    licence = terms.to_dict() if terms is not None else payload.get("licence")
    save_model_file(out_path, predictor.model.trainable_state_dict(), predictor.model.config, payload["sam"],
                    payload["epoch"], payload["iteration"], predictor.scale, licence)
    return losses


def train_size_head(model_path: Path, datasets: list, steps: int, seed: int, progress: bool,
                    teacher: Optional[Path] = None) -> bool:
    """Fit the nucleus-size head of the model file at `model_path`, unless it was trained already or `steps`
    is 0, and write the file again when fitted. Returns whether the model then has a trained head (False:
    none, as without `nucleus` scaling, or one left untrained)."""
    from ..inference.loading import load_model

    predictor = load_model(model_path, device="cpu", sam_checkpoint=teacher)
    head = predictor.model.size_head
    if head is None:
        return False
    if not head.is_trained and steps > 0:
        fit_and_write(predictor, model_path, model_path, datasets, steps, SIZE_LR, seed, progress)
    return head.is_trained


def train_size_head_further(model, corpus_path, out_path, steps: int, lr: Optional[float] = None, seed: int = 1,
                            teacher=None, progress: bool = True) -> HeadTraining:
    """See the module docstring. `model`: a model file or a bundled model's name; `lr`: the peak learning
    rate (None: `FURTHER_LR`); `teacher`: the SAM file the model runs on when not found by its record."""
    from ..inference.loading import load_model
    from ..licences import Terms, from_data, inherited
    from ..models.bundled import resolve_model
    from ..models.checkpoints import safe_torch_load
    from ..models.model_file import read_model_file

    model_path, out_path = resolve_model(model), Path(out_path)
    if not model_path.is_file():
        raise DessamError(f"{model_path}: model file not found; give a model.pt or a bundled model's name")
    if read_model_file(model_path).config.model.input_scaling != "nucleus":
        raise DessamError(f"{model_path}: this model does not bring images to a nucleus size, so it has no size "
                          "head; train one with model.input_scaling nucleus (the cpu preset's)")
    if steps <= 0:
        raise DessamError(f"--steps {steps}: give 1 or more")
    lr = FURTHER_LR if lr is None else lr
    if not lr > 0:
        raise DessamError(f"--lr {lr}: give a positive learning rate")
    if out_path.resolve() == model_path.resolve():
        raise DessamError(f"--out {out_path}: that is the model itself; name a new file")
    corpus = read_manifest(corpus_path)
    datasets = [load_dataset(spec, progress) for spec in corpus.datasets if "model" in spec.use]
    if not datasets:
        raise DessamError(f"{corpus.path}: no dataset is for the model; give one with use: [model]")
    own = safe_torch_load(model_path).get("licence")
    data = from_data({d.spec.name: d.spec.licence for d in datasets}, f"the size head's corpus {corpus.path.name}")
    terms = inherited(Terms.from_dict(own), data) if own else data
    out_path.parent.mkdir(parents=True, exist_ok=True)
    predictor = load_model(model_path, device="cpu", sam_checkpoint=Path(teacher) if teacher else None)
    losses = fit_and_write(predictor, model_path, out_path, datasets, steps, lr, seed, progress, terms)
    return HeadTraining(out_path, float(np.mean(losses[:100])), float(np.mean(losses[-100:])))
