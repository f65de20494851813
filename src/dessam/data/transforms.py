"""Resize to the model's input scale and back (numpy only).

SAM resizes an image so that its longest side is S, keeping the aspect ratio, and pads the
bottom/right to S x S. Boxes scale with the same factors.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


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


def box_scale(original_hw: tuple, resized_hw: tuple) -> np.ndarray:
    """Factors (sx, sy, sx, sy) that map x1y1x2y2 boxes from the original to the resized frame."""
    sy = resized_hw[0] / original_hw[0]
    sx = resized_hw[1] / original_hw[1]
    return np.array([sx, sy, sx, sy], dtype=np.float32)
