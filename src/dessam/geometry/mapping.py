"""Mask crops mapped back from the model's scale to the image's own pixels.

A mask travels as a boolean crop and its origin (row, column) in an image. Found on an image
resampled to the model's scale, it is brought back to the original pixels by nearest-neighbour
resampling computed only around the crop, never on a full-size mask:

- `rescale_crop`: as PyTorch's nearest resizing of the whole mask from one image shape to another
  would (`predict`, `eval` and `label` on a resampled image);
- `crop_to_source`: at a fixed number of source pixels per model pixel, from a region read out of a
  pyramid level (whole slides, `dessam.inference.slide_stream`): each source pixel takes the model
  pixel under its top-left corner, rows and columns past the crop repeating its edge.
"""

from __future__ import annotations

import math

import numpy as np

OUTSIDE = -1e4  # the logit of the positions beyond a prompt's decoding window or view (sigmoid 0)


def tight(crop: np.ndarray, y0: int, x0: int) -> tuple:
    """(crop, y0, x0) cut to the crop's own bounding box; an empty crop comes back 0 x 0."""
    rows = np.flatnonzero(crop.any(axis=1))
    if rows.size == 0:
        return crop[:0, :0], y0, x0
    cols = np.flatnonzero(crop.any(axis=0))
    return crop[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], y0 + int(rows[0]), x0 + int(cols[0])


def _nearest_sources(n_in: int, n_out: int, first: int, last: int) -> np.ndarray:
    """PyTorch's "nearest" resize: output positions [first, last) take input floor(i x n_in / n_out)."""
    scale = np.float32(n_in) / np.float32(n_out)
    return np.minimum(np.floor(np.arange(first, last, dtype=np.float32) * scale).astype(np.int64), n_in - 1)


def rescale_crop(crop: np.ndarray, origin: tuple, in_shape: tuple, shape: tuple) -> tuple:
    """(crop, y0, x0) of a crop at `origin` of an image of `in_shape`, brought to an image of `shape`
    the way PyTorch's nearest resizing of the whole mask would, cut to its bounding box."""
    (in_h, in_w), (height, width), (y0, x0) = in_shape, shape, origin
    top, left = max(int(np.floor(y0 * height / in_h)) - 1, 0), max(int(np.floor(x0 * width / in_w)) - 1, 0)
    bottom = min(int(np.ceil((y0 + crop.shape[0]) * height / in_h)) + 1, height)
    right = min(int(np.ceil((x0 + crop.shape[1]) * width / in_w)) + 1, width)
    rows = _nearest_sources(in_h, height, top, bottom) - y0
    cols = _nearest_sources(in_w, width, left, right) - x0
    inside_rows = (rows >= 0) & (rows < crop.shape[0])
    inside_cols = (cols >= 0) & (cols < crop.shape[1])
    big = np.zeros((len(rows), len(cols)), dtype=bool)
    big[np.ix_(inside_rows, inside_cols)] = crop[np.ix_(rows[inside_rows], cols[inside_cols])]
    return tight(big, top, left)


def crop_to_source(crop: np.ndarray, origin: tuple, downsample: float, offset: tuple) -> tuple:
    """(box x1y1x2y2, mask) in source pixels of a crop at `origin` (row, col) in model pixels, where
    one model pixel spans `downsample` source pixels and model pixel (0, 0) lies at source `offset`
    (x, y)."""
    d = downsample
    y0, x0 = origin
    if d == 1.0:
        box = (offset[0] + x0, offset[1] + y0, offset[0] + x0 + crop.shape[1], offset[1] + y0 + crop.shape[0])
        return box, crop
    top, left = int(math.floor(y0 * d)), int(math.floor(x0 * d))
    bottom, right = int(math.ceil((y0 + crop.shape[0]) * d)), int(math.ceil((x0 + crop.shape[1]) * d))
    rows = np.clip(np.floor(np.arange(top, bottom) / d).astype(np.int64) - y0, 0, crop.shape[0] - 1)
    cols = np.clip(np.floor(np.arange(left, right) / d).astype(np.int64) - x0, 0, crop.shape[1] - 1)
    mask = crop[np.ix_(rows, cols)]
    return (offset[0] + left, offset[1] + top, offset[0] + right, offset[1] + bottom), mask
