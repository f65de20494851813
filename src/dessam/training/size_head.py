"""Training the nucleus-size head (`dessam.models.size_head`) on images with instance maps.

Each step draws crops of the training images zoomed so that their median nucleus is anywhere from
`SIZE_RANGE[0]` to `SIZE_RANGE[1]` pixels (log-uniformly), turned, flipped and recoloured as the
teacher's training views are (`dessam.data.augment`), encodes them with the frozen image encoder
and fits the head's log-size to the crop's median nucleus side (sqrt(w x h) of the boxes of the
nuclei that the crop holds whole; all of them when fewer than three are whole). Crops are encoded
as `dessam.inference.nucleus_size` encodes a new image's (`encoder_input_side`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from scipy import ndimage
from tqdm.auto import tqdm

from ..data.augment import recolour, resampled_crop
from ..geometry.inputs import prepare_image
from ..geometry.scale import SIZE_RANGE, estimate_crop
from ..models.size_head import encoder_input_side, fixed_input_side
from .batches import return_freed_memory

P_RECOLOUR = 0.8


@dataclass
class SizeSource:
    """Where crops come from: `draw(rng)` gives one (image, instance map) pair; `weight` is its share."""

    name: str
    draw: Callable
    weight: float = 1.0


def median_side(labels: np.ndarray) -> Optional[float]:
    """The median sqrt(w x h) of the boxes of the nuclei held whole by `labels` (all of them when fewer
    than three are whole); None without nuclei."""
    slices = [s for s in ndimage.find_objects(labels) if s is not None]
    if not slices:
        return None
    height, width = labels.shape
    sides = np.array([math.sqrt((s[0].stop - s[0].start) * (s[1].stop - s[1].start)) for s in slices])
    whole = np.array([s[0].start > 0 and s[1].start > 0 and s[0].stop < height and s[1].stop < width for s in slices])
    return float(np.median(sides[whole] if whole.sum() >= 3 else sides))


def training_crop(rng: np.random.Generator, image: np.ndarray, labels: np.ndarray, crop: int):
    """(crop image, its median nucleus side) zoomed to a random nucleus size, or None when the crop
    holds no nucleus."""
    own = median_side(labels)
    if own is None:
        return None
    target = math.exp(rng.uniform(math.log(SIZE_RANGE[0]), math.log(SIZE_RANGE[1])))
    scale = target / own
    span = crop / scale
    height, width = labels.shape
    top = rng.uniform(min(0.0, height - span), max(0.0, height - span))
    left = rng.uniform(min(0.0, width - span), max(0.0, width - span))
    pixels, crop_labels = resampled_crop(image, labels, top, left, scale, crop)
    side = median_side(crop_labels)
    if side is None:
        return None
    turns = int(rng.integers(4))
    pixels = np.rot90(pixels, turns)
    if rng.random() < 0.5:
        pixels = pixels[:, ::-1]
    pixels = np.ascontiguousarray(pixels)
    if rng.random() < P_RECOLOUR:
        pixels = recolour(rng, pixels)
    return pixels, side


def fit_size_head(model, sources: list, steps: int = 1500, batch: int = 8, lr: float = 1e-3, seed: int = 0,
                  device="cpu", progress: bool = True) -> list:
    """Train `model.size_head` (the rest of `model` frozen) on crops of `sources`; returns the loss of
    each step (mean absolute error of log size)."""
    head, encoder = model.size_head, model.sam.image_encoder
    crop = estimate_crop(fixed_input_side(encoder))
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    weights = np.array([source.weight for source in sources], float)
    weights /= weights.sum()
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    losses = []
    head.train()
    for _ in tqdm(range(steps), desc="Nucleus-size head", unit="step", disable=not progress):
        crops, targets = [], []
        while len(crops) < batch:
            source = sources[int(rng.choice(len(sources), p=weights))]
            drawn = training_crop(rng, *source.draw(rng), crop)
            if drawn is not None:
                crops.append(torch.from_numpy(prepare_image(drawn[0], encoder_input_side(encoder, crop), fit=False).normalised))
                targets.append(math.log(drawn[1]))
        inputs = torch.stack(crops).to(device)
        with torch.no_grad():
            embeddings = encoder(inputs)
        cells = math.ceil(crop * embeddings.shape[-1] / inputs.shape[-1])
        valid = torch.tensor([[cells, cells]] * len(crops), dtype=torch.float32)
        loss = torch.nn.functional.smooth_l1_loss(head(embeddings, valid), torch.tensor(targets, device=device),
                                                  beta=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.item()))
        return_freed_memory()
    head.eval()
    head.trained.fill_(1.0)
    return losses
