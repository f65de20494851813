"""Turn an image into what SAM's encoder takes, and remember how to map results back.

SAM resizes an image so that its longest side is S, keeping the aspect ratio, and pads the
bottom/right to S x S; boxes scale with the same factors. SAM's pixel normalisation (RGB, 0-255
units) is defined here once, for every SAM and for input preparation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image

from ..data.images import to_rgb, to_uint8

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def resized_shape(height: int, width: int, size: int) -> tuple:
    """(h, w) after resizing the longest side to `size` (SAM's rounding)."""
    scale = size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_longest(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of an HxWx3 uint8 image so that its longest side is `size`."""
    h, w = resized_shape(image.shape[0], image.shape[1], size)
    if (h, w) == image.shape[:2]:
        return np.ascontiguousarray(image)
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def resize_by(image: np.ndarray, factor: float) -> np.ndarray:
    """Bilinear resize of an HxWx3 uint8 image by `factor` (sides rounded to whole pixels)."""
    if factor == 1.0:
        return np.ascontiguousarray(image)
    h, w = (max(int(side * factor + 0.5), 1) for side in image.shape[:2])
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def trimmed_side(resized_hws: list, size: int, multiple: Optional[int]) -> Optional[int]:
    """The side of the square, from the top left of S x S inputs, that holds every input's image
    (`resized_hws`, (h, w) each), rounded up to `multiple` (what the encoder and the detector's
    coarsest level divide): what a fully convolutional encoder needs to read of a batch whose images
    are smaller than its input. None when there is nothing to trim (no `multiple`, or the square is
    the whole input)."""
    if not multiple:
        return None
    largest = max((max(int(h), int(w)) for h, w in resized_hws), default=size)
    side = -(-largest // multiple) * multiple
    return int(side) if side < size else None


def box_scale(original_hw: tuple, resized_hw: tuple) -> np.ndarray:
    """Factors (sx, sy, sx, sy) that map x1y1x2y2 boxes from the original to the resized frame."""
    sy = resized_hw[0] / original_hw[0]
    sx = resized_hw[1] / original_hw[1]
    return np.array([sx, sy, sx, sy], dtype=np.float32)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 from gray, RGBA or 16-bit input."""
    return to_rgb(to_uint8(np.asarray(image)))


@dataclass
class ModelInput:
    rgb: np.ndarray            # (3, S, S) float32 0-255, zero padding bottom/right
    normalised: np.ndarray     # (3, S, S) float32 SAM-normalised, zero padding (as Sam.preprocess)
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
    rgb = np.zeros((3, size, size), dtype=np.float32)
    rgb[:, :h, :w] = resized.transpose(2, 0, 1)
    normalised = np.zeros_like(rgb)
    mean = np.float32(PIXEL_MEAN).reshape(3, 1, 1)
    std = np.float32(PIXEL_STD).reshape(3, 1, 1)
    normalised[:, :h, :w] = (rgb[:, :h, :w] - mean) / std
    return ModelInput(rgb, normalised, (h, w), tuple(image.shape[:2]), resized)
