"""Mean DES-SAM losses on a validation set (boxes only are needed), written to `RUN/val.csv`."""

from __future__ import annotations

import csv

import numpy as np
import torch

from ..atomic import atomic_path
from ..data.coco import load_coco
from ..models.dessam import LOSS_NAMES
from .batches import batch_tensors, encode_training_set


def write_validation_losses(model, config, val_json, images_dir, cache, device, path, progress=True) -> dict:
    dataset = load_coco(val_json, images_dir)
    items = encode_training_set(model, dataset.images, cache, device, progress)
    sums = {name: [] for name in ("total",) + LOSS_NAMES}
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(config.train.seed)
        model.train()
        for item in items:
            losses = model(*batch_tensors(model, [item], cache, device))
            sums["total"].append(model.weighted_total(losses).item())
            for name in LOSS_NAMES:
                sums[name].append(losses[name].item())
    means = {name: float(np.mean(values)) if values else float("nan") for name, values in sums.items()}
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, list(means))
            writer.writeheader()
            writer.writerow(means)
    return means
