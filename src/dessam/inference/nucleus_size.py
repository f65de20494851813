"""A new image's typical nucleus size, for models with `nucleus` scaling (`dessam.geometry.scale`).

The model's nucleus-size head (`dessam.models.size_head`) reads crops of the image at its own
resolution: the whole image when it is small, else up to `MAX_CROPS` crops of `CROP` pixels spread
over it (the crops of a large field are alike; the median of their estimates is the image's).
Given a size (`--nucleus-size`), nothing is estimated. A model whose head was never trained (a
model trained from random weights on its own boxes) takes its training set's typical resampling.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ..geometry.inputs import normalised_padded
from ..models.size_head import CROP, SIZE_RANGE, encoder_input_side

MAX_CROPS = 4


def estimation_crops(image: np.ndarray, crop: int = CROP, count: int = MAX_CROPS) -> list:
    """Up to `count` crops of `crop` pixels spread evenly over `image` (the image itself when smaller)."""
    height, width = image.shape[:2]
    if height <= crop and width <= crop:
        return [image]
    rows = 1 if height <= crop else 2
    cols = 1 if width <= crop else max(1, count // rows)
    tops = np.linspace(0, max(height - crop, 0), rows + 2)[1:-1].astype(int) if rows > 1 else [max((height - crop) // 2, 0)]
    lefts = np.linspace(0, max(width - crop, 0), cols + 2)[1:-1].astype(int) if cols > 1 else [max((width - crop) // 2, 0)]
    return [image[top:top + crop, left:left + crop] for top in tops for left in lefts][:count]


@torch.no_grad()
def estimate_nucleus_size(model, image: np.ndarray, device="cpu") -> Optional[float]:
    """The median nucleus side (pixels of `image`) that `model`'s size head reads, or None when the
    model has no trained head."""
    head = getattr(model, "size_head", None)
    if head is None or not head.is_trained:
        return None
    crops = estimation_crops(image)
    encoder = model.sam.image_encoder
    side = encoder_input_side(encoder, max(max(c.shape[:2]) for c in crops))
    estimates = []
    for batch in (crops,):
        inputs = torch.stack([normalised_padded(c, side) for c in batch]).to(device)
        embeddings = encoder(inputs)
        stride = inputs.shape[-1] / embeddings.shape[-1]
        valid = torch.tensor([[math.ceil(c.shape[0] / stride), math.ceil(c.shape[1] / stride)] for c in batch],
                             dtype=torch.float32)
        estimates += torch.exp(head(embeddings, valid)).cpu().tolist()
    low, high = SIZE_RANGE  # the sizes the head was trained on
    return float(np.clip(np.median(estimates), low, high))
