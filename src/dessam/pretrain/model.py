"""Pre-train a whole DES-SAM model on a corpus, from its boxes only.

`dessam pretrain-model --corpus CORPUS.yaml --teacher TEACHER.pt --out RUN`:
1. writes the corpus's training images with their **boxes only** as one COCO file
   (`RUN/corpus/train.json`, images under `RUN/corpus/images/`), drawing `synthetic_images`
   scenes for each synthetic dataset; and each dataset's held-out images with their masks
   (`RUN/corpus/val_NAME.json`);
2. trains DES-SAM on them with `dessam train` (the `cpu` preset on the given teacher, from random
   weights, with any `--config` / `--set` on top): the detector and the token learn from boxes, the
   masks come from the teacher, as everywhere in dessam;
3. with `nucleus` scaling (the `cpu` preset's), trains the model's nucleus-size head on crops of the
   corpus's training images and their instance maps (`dessam.training.size_head`);
4. scores the model on every held-out set (`RUN/val/NAME/`) and writes `RUN/model.md`, its model
   card.
The model is then what `dessam predict` uses when given no `--model`, once `model.pt` and the
teacher are copied into dessam's assets (see docs/models.md).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm.auto import tqdm

from ..atomic import write_text_atomic
from ..config import Config
from ..config.runtime import Runtime
from ..data.coco import label_map_to_annotations, write_coco
from ..data.corpus import load_dataset, read_manifest, synthetic_scene
from ..data.images import write_png
from ..errors import DessamError
from ..licences import from_data
from ..models.model_file import read_model_file
from ..training.model_card import corpus_table, detector_sentence, licence_text, settings_section
from .size_head import SIZE_STEPS, train_size_head

SYNTHETIC_TRAIN_STREAM = 5_113_877  # seeds of the synthetic training scenes, apart from every other use
SUMMARY_METRICS = (("aji", "AJI"), ("pq", "PQ"), ("f1", "Det. F1"), ("precision", "Det. P"), ("recall", "Det. R"))


@dataclass
class PretrainedModel:
    model_path: Path
    card_path: Path
    validation: dict   # dataset name -> metrics of the held-out set
    unscored: Optional[str] = None   # why the held-out sets were not scored, when they were not


def write_corpus_coco(datasets: list, folder: Path, synthetic_images: int, progress: bool = True) -> tuple:
    """The training images with boxes only (train.json) and each held-out set with masks
    (val_NAME.json), under `folder`; returns (train json, images folder, {name: val json})."""
    images_dir = folder / "images"
    train_images, train_annotations, val_files = [], [], {}
    for dataset in datasets:
        name = dataset.spec.name
        train = dataset.train
        if dataset.synthetic:
            streams = (np.random.default_rng([SYNTHETIC_TRAIN_STREAM, i]) for i in range(synthetic_images))
            train = (synthetic_scene(dataset.spec.generator, rng) for rng in streams)
        for index, sample in enumerate(tqdm(train, desc=f"writing {name}", unit="img", disable=not progress,
                                            leave=False)):
            file_name = f"{name}/train_{index:05d}.png"
            write_png(images_dir / file_name, sample.image)
            image_id = len(train_images) + 1
            train_images.append({"id": image_id, "file_name": file_name, "height": sample.labels.shape[0],
                                 "width": sample.labels.shape[1]})
            train_annotations += label_map_to_annotations(sample.labels, image_id, len(train_annotations) + 1,
                                                          with_masks=False)
        if dataset.val:
            images, annotations = [], []
            for index, sample in enumerate(dataset.val):
                file_name = f"{name}/val_{index:05d}.png"
                write_png(images_dir / file_name, sample.image)
                images.append({"id": index + 1, "file_name": file_name, "height": sample.labels.shape[0],
                               "width": sample.labels.shape[1]})
                annotations += label_map_to_annotations(sample.labels, index + 1, len(annotations) + 1)
            val_files[name] = folder / f"val_{name}.json"
            write_coco(val_files[name], images, annotations)
    train_json = folder / "train.json"
    write_coco(train_json, train_images, train_annotations)
    return train_json, images_dir, val_files


def pretrained_config(teacher: Path, max_iters: Optional[int], seed: int = 0, init: str = "scratch",
                      file=None, overrides: Optional[dict] = None) -> Config:
    """The `cpu` preset on `teacher`, from random weights (or from `init`, a model file), with the YAML
    `file`'s settings and `overrides` on top."""
    settings = {"model.sam": "default", "model.sam_checkpoint": str(teacher), "train.init": init,
                "train.max_iters": max_iters, "train.seed": seed,
                "train.min_iters": None}  # epochs as asked: the corpus is not small
    return Config.compose("cpu", file, {**settings, **(overrides or {})})


def pretrain_model(corpus_path, teacher, out_dir, max_iters: Optional[int] = None, epochs: Optional[int] = None,
                   synthetic_images: int = 200, seed: int = 0, command: str = "", resume: bool = False,
                   progress: bool = True, init: str = "scratch", config_file=None, overrides: Optional[dict] = None,
                   size_steps: int = SIZE_STEPS) -> PretrainedModel:
    """See the module docstring."""
    from ..evaluation.evaluate import evaluate_model_file
    from ..training.train import train

    teacher, out_dir = Path(teacher), Path(out_dir)
    if not teacher.is_file():
        raise DessamError(f"{teacher}: teacher file not found; give a teacher.pt written by `dessam pretrain-teacher`")
    if synthetic_images < 0:
        raise DessamError(f"--synthetic-images {synthetic_images}: give 0 or more")
    corpus = read_manifest(corpus_path)
    datasets = [load_dataset(spec, progress) for spec in corpus.datasets if "model" in spec.use]
    if size_steps < 0:
        raise DessamError(f"--size-steps {size_steps}: give 0 or more")
    if not datasets:
        raise DessamError(f"{corpus.path}: no dataset is for the model; give one with use: [model]")
    folder = out_dir / "corpus"
    if resume and (folder / "train.json").is_file():
        train_json, images_dir = folder / "train.json", folder / "images"
        val_files = {d.spec.name: folder / f"val_{d.spec.name}.json" for d in datasets if d.val}
    else:
        train_json, images_dir, val_files = write_corpus_coco(datasets, folder, synthetic_images, progress)
    config = pretrained_config(teacher, max_iters, seed, init, config_file, overrides)
    if epochs is not None:  # the learning rate still drops for the last sixth of the schedule, as the preset's
        config = config.replace({"train.epochs": int(epochs), "train.lr_steps": (epochs * 5 / 6,)})
    data_terms = from_data({d.spec.name: d.spec.licence for d in datasets}, f"the corpus {corpus.path.name}")
    result = train(config, train_json, images_dir, out_dir, resume=resume, progress=progress, data_terms=data_terms)
    sized = train_size_head(result.model_path, datasets, size_steps, seed, progress, teacher)
    unscored = UNSIZED if config.model.input_scaling == "nucleus" and not sized else None
    validation = {}
    for name, val_json in ({} if unscored else val_files).items():
        report = evaluate_model_file(result.model_path, val_json, images_dir, out_dir / "val" / name,
                                     sam_checkpoint=teacher, runtime=Runtime(engine="torch", device="cpu"),
                                     progress=progress)
        validation[name] = {**report["methods"]["des-sam"], "nucleus_size": report["settings"].get("nucleus_size")}
    card = model_card(corpus, datasets, validation, result, config, teacher, command, synthetic_images, unscored)
    card_path = out_dir / "model.md"
    write_text_atomic(card_path, card)
    return PretrainedModel(result.model_path, card_path, validation, unscored)


UNSIZED = ("not scored: the model brings every image to a nucleus size, and its size head is untrained "
           "(--size-steps 0), so it would run at one fixed scale, as nobody would use it; train the head with "
           "`dessam train-size-head`, then score it with `dessam eval`")


def scaling_sentence(config: Config) -> str:
    """How the model saw its training images, in words."""
    model, train = config.model, config.train
    if model.input_scaling != "nucleus":
        return "images at their own resolution"
    copies = (f", {train.copies} versions of each (the first as it is, the others zoomed {train.zoom[0]:g}-"
              f"{train.zoom[1]:g}x, turned, flipped{' and recoloured' if train.recolour else ''})"
              if train.copies > 1 else "")
    return (f"each image resampled so that its median nucleus (box side) is {model.nucleus_px:g} px{copies}; a new "
            "image is brought there by the nucleus size its size head estimates (or `--nucleus-size`)")


def model_card(corpus, datasets, validation: dict, result, config: Config, teacher: Path, command: str,
               synthetic_images: int, unscored: Optional[str] = None) -> str:
    nucleus = config.model.input_scaling == "nucleus"
    rows = ["| held-out set | images | " + " | ".join(title for _, title in SUMMARY_METRICS)
            + (" | nucleus size estimate / truth (median) |" if nucleus else " |"),
            "|---|---:|" + "---:|" * (len(SUMMARY_METRICS) + nucleus)]
    for dataset in datasets:
        if dataset.spec.name in validation:
            metrics = validation[dataset.spec.name]
            sizes = metrics.get("nucleus_size") or {}
            rows.append(f"| {dataset.spec.name} | {len(dataset.val)} | "
                        + " | ".join(f"{metrics.get(key, float('nan')):.3f}" for key, _ in SUMMARY_METRICS)
                        + (f" | {sizes.get('median_ratio', float('nan')):.2f} |" if nucleus else " |"))
    return f"""# dessam pretrained model

DES-SAM (a Faster R-CNN detector and one learned prompt token on the frozen default teacher,
`{teacher.name}`) trained from the **boxes only** of a public corpus: the masks come from the teacher, as in
every dessam model. It is what `dessam predict` uses without `--model`, and where `dessam train --sam default`
starts (`--init scratch` starts from random weights). {detector_sentence(config)}

**Licence of these weights:** {licence_text(result.terms)}.

## Training data (corpus `{corpus.path.name}`; boxes only)

{corpus_table(datasets)}

Synthetic datasets: {synthetic_images} scenes each. {result.iterations} iterations ({result.epochs_done} epochs) of the
`cpu` preset: {scaling_sentence(config)} in windows of {config.model.image_size} px; {result.start or 'started from random weights'}.

## Held-out sets (`dessam eval`, the model's own post-processing)

{f"{unscored[0].upper()}{unscored[1:]}." if unscored else chr(10).join(rows)}

{settings_section(read_model_file(result.model_path).config)}
Command: `{command or '(from the Python API)'}`

Date: {datetime.date.today().isoformat()}
"""
