"""Low-resolution logits to instance masks at the image's own size, one crop per instance.

SAM's masks leave the decoder as low-resolution logits over the padded S x S input (4 x the
embedding grid). The authors upsample them bilinearly to S x S, cut the valid (unpadded) region,
resize that bilinearly to the original image and threshold it. Done for every mask over the whole
image, that costs N x H x W work and memory. Here each mask is computed only on the window of the
image where it can be positive: a bilinear value is a weighted mean of its sources, so it can pass
the threshold only near low-resolution logits that pass it. The window's values are those of the
whole-image computation, by the same formula as PyTorch's bilinear resizing (`align_corners=False`),
up to float rounding (within 2e-5 of PyTorch's own in the worst case we measured). It is numpy
alone, in float32, so that every engine (PyTorch, ONNX Runtime) shares it.
"""

from __future__ import annotations

import math

import numpy as np

from ..geometry.inputs import ModelInput
from ..geometry.mapping import OUTSIDE, tight


def _linear_sources(n_in: int, n_out: int, outputs: np.ndarray) -> tuple:
    """For output positions `outputs`, PyTorch's bilinear sources (i0, i1) and weights (w0, w1)."""
    scale = np.float32(n_in) / np.float32(n_out)
    real = np.maximum(scale * (outputs.astype(np.float32) + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    i0 = real.astype(np.int64)
    w1 = np.clip(real - i0.astype(np.float32), np.float32(0), np.float32(1))
    i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
    return i0, i1, np.float32(1) - w1, w1


def _resize_rows_cols(values, first_row: int, first_col: int, n_in: tuple, n_out: tuple, rows, cols):
    """Bilinear resize from an input of size `n_in` to `n_out`, evaluated at output `rows` x `cols`.

    `values` (h, w) holds the input from row `first_row`, column `first_col` on; every source the
    outputs need must lie inside it.
    """
    r0, r1, a0, a1 = _linear_sources(n_in[0], n_out[0], rows)
    c0, c1, b0, b1 = _linear_sources(n_in[1], n_out[1], cols)
    r0, r1, c0, c1 = r0 - first_row, r1 - first_row, c0 - first_col, c1 - first_col
    top, bottom = values[r0], values[r1]
    top = top[:, c0] * b0 + top[:, c1] * b1
    bottom = bottom[:, c0] * b0 + bottom[:, c1] * b1
    return top * a0[:, None] + bottom * a1[:, None]


def _span(lo: int, hi: int, n_in: int, n_out: int, limit: int) -> tuple:
    """Output positions [a, b) whose bilinear sources may touch input positions [lo, hi)."""
    ratio = n_out / n_in
    return max(int(math.floor((lo - 1.5) * ratio)) - 1, 0), min(int(math.ceil((hi + 1.5) * ratio)) + 1, limit)


def _window_input(logits: np.ndarray, origin: tuple, rows: tuple, cols: tuple) -> np.ndarray:
    """The low-res logits over frame rows/cols [a, b), `OUTSIDE` where the decoded window ends."""
    out = np.full((rows[1] - rows[0], cols[1] - cols[0]), OUTSIDE, dtype=np.float32)
    k_h, k_w = logits.shape
    y0, y1 = max(rows[0], origin[0]), min(rows[1], origin[0] + k_h)
    x0, x1 = max(cols[0], origin[1]), min(cols[1], origin[1] + k_w)
    if y1 > y0 and x1 > x0:
        out[y0 - rows[0]:y1 - rows[0], x0 - cols[0]:x1 - cols[0]] = logits[y0 - origin[0]:y1 - origin[0],
                                                                           x0 - origin[1]:x1 - origin[1]]
    return out


def instance_crop(logits: np.ndarray, origin: tuple, frame: tuple, inputs: ModelInput, threshold: float) -> tuple:
    """(bool crop, y0, x0) at the original image size of one prompt's low-res `logits` (k, k, float32)
    whose window starts at `origin` (row, col) of the low-res `frame`, cut to the mask's bounding box;
    a 0 x 0 crop when nothing passes."""
    positive = np.argwhere(logits > threshold)
    if not len(positive):
        return np.zeros((0, 0), dtype=bool), 0, 0
    size = inputs.rgb.shape[-1]
    valid_h, valid_w = inputs.resized_hw
    height, width = inputs.original_hw
    ly0, lx0 = (positive.min(0) + origin).tolist()
    ly1, lx1 = (positive.max(0) + origin + 1).tolist()
    # input frame (S x S, cut to its valid part) positions that may pass, then original positions
    sy = _span(ly0, ly1, frame[0], size, valid_h)
    sx = _span(lx0, lx1, frame[1], size, valid_w)
    if sy[0] >= sy[1] or sx[0] >= sx[1]:
        return np.zeros((0, 0), dtype=bool), 0, 0  # only the padding would pass
    oy = _span(sy[0], sy[1], valid_h, height, height)
    ox = _span(sx[0], sx[1], valid_w, width, width)
    out_rows, out_cols = np.arange(*oy), np.arange(*ox)
    if (height, width) == (valid_h, valid_w):
        mid_rows, mid_cols = out_rows, out_cols       # the original is the valid region itself
    else:
        mid_rows = np.arange(*_span(oy[0], oy[1], height, valid_h, valid_h))
        mid_cols = np.arange(*_span(ox[0], ox[1], width, valid_w, valid_w))
    low_rows = _span(int(mid_rows[0]), int(mid_rows[-1]) + 1, size, frame[0], frame[0])
    low_cols = _span(int(mid_cols[0]), int(mid_cols[-1]) + 1, size, frame[1], frame[1])
    low = _window_input(np.asarray(logits, np.float32), origin, low_rows, low_cols)
    mid = _resize_rows_cols(low, low_rows[0], low_cols[0], frame, (size, size), mid_rows, mid_cols)
    if (height, width) != (valid_h, valid_w):
        mid = _resize_rows_cols(mid, int(mid_rows[0]), int(mid_cols[0]), (valid_h, valid_w), (height, width),
                                out_rows, out_cols)
    crop, y0, x0 = tight(mid > threshold, oy[0], ox[0])
    return crop.copy(), y0, x0  # its own memory: a view would hold the whole window
