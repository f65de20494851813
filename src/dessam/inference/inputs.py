"""Turn an image into what SAM's encoder takes, and remember how to map results back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.transforms import box_scale, resize_longest
from ..models.pixels import PIXEL_MEAN, PIXEL_STD


@dataclass
class ModelInput:
    rgb: torch.Tensor          # (3, S, S) float 0-255, zero padding bottom/right
    normalised: torch.Tensor   # (3, S, S) SAM-normalised, zero padding (as Sam.preprocess)
    resized_hw: tuple          # valid region inside the S x S frame
    original_hw: tuple
    resized: np.ndarray        # the resized uint8 image (what the encoder sees; the cache key)

    @property
    def scale(self) -> np.ndarray:
        """(sx, sy, sx, sy): original-frame boxes times this are input-frame boxes."""
        return box_scale(self.original_hw, self.resized_hw)


def prepare_image(image: np.ndarray, size: int, fit: bool = True) -> ModelInput:
    """`image` in an S x S input: resized so that its longest side is S (`fit`, SAM's and the authors'
    way), or as it is (`fit=False`: at most S x S), then zero-padded bottom and right."""
    if fit:
        resized = resize_longest(image, size)
    elif max(image.shape[:2]) > size:
        raise ValueError(f"an image of {image.shape[1]} x {image.shape[0]} px does not fit an input of {size} px")
    else:
        resized = np.ascontiguousarray(image)
    h, w = resized.shape[:2]
    rgb = torch.zeros((3, size, size), dtype=torch.float32)
    rgb[:, :h, :w] = torch.tensor(resized).permute(2, 0, 1).float()
    normalised = torch.zeros_like(rgb)
    mean = torch.tensor(PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(3, 1, 1)
    normalised[:, :h, :w] = (rgb[:, :h, :w] - mean) / std
    return ModelInput(rgb, normalised, (h, w), tuple(image.shape[:2]), resized)
