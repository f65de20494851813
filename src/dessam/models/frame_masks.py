"""Given masks in SAM's low-resolution logit frame, as distillation targets.

Where an annotation comes with a mask, the proposals matched to it learn that mask instead of the
teacher's pseudo-mask. The student's logits live in SAM's low-resolution frame (4 x the embedding
grid over the padded S x S input), on a window of it when decoding is local, so each given mask
travels as a small boolean crop of that frame (`FrameMasks`), never as a full-size array.

`rasterise` brings a mask from the original image into the frame: a low-resolution pixel is set
when the mask covers at least half of its area (the pseudo-mask's threshold, logit 0, is
probability one half). The area is exact: the summed-area table of a pixel mask is bilinear
between pixel corners, so interpolating it at the low-resolution pixels' corners gives their
covered area at any scale. A mask smaller than half a low-resolution pixel keeps its most covered one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class FrameMasks:
    """The given masks of one image's annotations, in the low-resolution frame."""

    crops: list              # per annotation: a bool tensor (h, w), or None where it has a box only
    origins: torch.Tensor    # (N, 2) long: row, column of each crop's first pixel in the frame

    def to(self, device) -> "FrameMasks":
        return FrameMasks([None if c is None else c.to(device) for c in self.crops], self.origins.to(device))


def _at_edges(table: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """`table` (n + 1, ...) linearly interpolated along its first axis at positions `edges` in [0, n]."""
    n = table.shape[0] - 1
    edges = np.clip(edges, 0, n)
    first = np.minimum(np.floor(edges).astype(np.int64), max(n - 1, 0))
    weight = (edges - first).reshape((-1,) + (1,) * (table.ndim - 1))
    return table[first] * (1 - weight) + table[np.minimum(first + 1, n)] * weight


def rasterise(crop: np.ndarray, top: float, left: float, scale: tuple, input_size: int, frame_size: int) -> tuple:
    """(bool array, row, column) of a mask in the low-resolution frame, cut to its own extent.

    crop: bool (h, w) of the mask whose first pixel lies `top`, `left` original pixels below and
    right of the input's first pixel (negative where the input is a window that cuts the mask);
    `scale` (y, x): input pixels per original pixel; the input is `input_size` (S) pixels wide, its
    low-resolution frame `frame_size`. Only the part inside the frame is kept; nothing (or nothing
    inside) gives a 0 x 0 array.
    """
    crop = np.asarray(crop, dtype=bool)
    if not crop.any():
        return np.zeros((0, 0), dtype=bool), 0, 0
    # one low-resolution pixel, in original pixels
    cell_h = input_size / frame_size / scale[0]
    cell_w = input_size / frame_size / scale[1]
    r0, c0 = max(int(math.floor(top / cell_h)), 0), max(int(math.floor(left / cell_w)), 0)
    r1 = min(int(math.ceil((top + crop.shape[0]) / cell_h)), frame_size)
    c1 = min(int(math.ceil((left + crop.shape[1]) / cell_w)), frame_size)
    if r1 <= r0 or c1 <= c0:
        return np.zeros((0, 0), dtype=bool), 0, 0
    table = np.zeros((crop.shape[0] + 1, crop.shape[1] + 1), dtype=np.float64)
    table[1:, 1:] = crop.cumsum(0).cumsum(1)
    rows = _at_edges(table, np.arange(r0, r1 + 1) * cell_h - top)
    corners = _at_edges(rows.T, np.arange(c0, c1 + 1) * cell_w - left).T
    area = corners[1:, 1:] - corners[:-1, 1:] - corners[1:, :-1] + corners[:-1, :-1]
    covered = area >= 0.5 * cell_h * cell_w
    if not covered.any():
        covered.flat[int(np.argmax(area))] = True
    rows_kept = np.flatnonzero(covered.any(1))
    cols_kept = np.flatnonzero(covered.any(0))
    out = covered[rows_kept[0]:rows_kept[-1] + 1, cols_kept[0]:cols_kept[-1] + 1]
    return out, r0 + int(rows_kept[0]), c0 + int(cols_kept[0])


def distillation_targets(teacher, image_index: torch.Tensor, matched_index: torch.Tensor, masks: list) -> tuple:
    """(targets (N, 1, k, k) float, supervised (N,) bool) of N prompts.

    teacher: the teacher's `DecodedMasks` of the prompts (logits over each prompt's window, whose
    first pixel lies at `teacher.origins`); image_index, matched_index: (N,) each prompt's image and
    its matched annotation there; masks: per image, `FrameMasks` or None. A prompt whose annotation
    has a given mask is supervised by it (cut to the prompt's window); the others by the teacher's
    pseudo-mask (logits > 0).
    """
    targets = (teacher.logits > 0).to(teacher.logits.dtype)
    supervised = torch.zeros(len(targets), dtype=torch.bool, device=targets.device)
    k_h, k_w = targets.shape[-2:]
    for n, (image, annotation) in enumerate(zip(image_index.tolist(), matched_index.tolist())):
        given = masks[image]
        crop = None if given is None else given.crops[annotation]
        if crop is None:
            continue
        supervised[n] = True
        targets[n] = 0
        (cy, cx), (wy, wx) = given.origins[annotation].tolist(), teacher.origins[n].tolist()
        y0, x0 = max(cy, wy), max(cx, wx)
        y1, x1 = min(cy + crop.shape[0], wy + k_h), min(cx + crop.shape[1], wx + k_w)
        if y1 > y0 and x1 > x0:
            targets[n, 0, y0 - wy:y1 - wy, x0 - wx:x1 - wx] = crop[y0 - cy:y1 - cy, x0 - cx:x1 - cx].to(targets.dtype)
    return targets, supervised
