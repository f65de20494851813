"""The training schedule: epochs and their learning-rate steps, the official warm-up and steps, the
optimiser, and the order of the images in each epoch."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ..config import Config


def with_epochs(config: Config, epochs: int) -> Config:
    """`config` trained for `epochs` epochs, its learning-rate steps at the same fractions of the run."""
    steps = tuple(max(1, round(step * epochs / config.train.epochs)) for step in config.train.lr_steps)
    return config.replace({"train.epochs": epochs, "train.lr_steps": steps})


def stretched_schedule(config: Config, batches_per_epoch: int) -> Config:
    """`config` with enough epochs for `train.min_iters` iterations: thirty tiles are 360 iterations
    in the `cpu` preset's 12 epochs, too few for the detector (on real H&E, 48 epochs gained 0.06 AJI
    over 12)."""
    train = config.train
    if not train.min_iters or train.epochs * batches_per_epoch >= train.min_iters:
        return config
    return with_epochs(config, math.ceil(train.min_iters / max(batches_per_epoch, 1)))


def learning_rate(config: Config, iteration: int, epoch: int, world_size: int = 1,
                  batches_per_epoch: Optional[int] = None) -> float:
    """Official schedule: linear warm-up, then x gamma at each step epoch; lr scaled to the batch. A step
    may fall inside an epoch (1.5: half-way through the second), counted in batches when
    `batches_per_epoch` is given."""
    train = config.train
    base = train.lr * train.batch_size * world_size / train.lr_reference_batch
    position = epoch if not batches_per_epoch else max(epoch, iteration / batches_per_epoch)
    factor = train.lr_gamma ** sum(position >= step for step in train.lr_steps)
    if iteration < train.warmup_iters:
        alpha = iteration / max(train.warmup_iters, 1)
        factor *= train.warmup_ratio * (1 - alpha) + alpha
    return base * factor


def make_optimizer(config: Config, parameters: list, lr: float) -> torch.optim.Optimizer:
    train = config.train
    if train.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=train.momentum, weight_decay=train.weight_decay)
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=train.weight_decay)  # "adamw"


def epoch_order(seed: int, epoch: int, count: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(count)
