"""Per-box views: each box seen at a resolution of its own, the way a pathologist zooms in on a nucleus.

A teacher that decodes on views (`arch["views"]` of the default teacher) does not read a nucleus off
the whole image's embedding. For each box it cuts a square around the box (`context` times the box's
longer side, at least `min_side` pixels), resamples it to `size` x `size` pixels, encodes that view
with its own encoder, and prompts SAM's decoder with the box in the view's coordinates. Every
nucleus, small or large, is then drawn at the same number of logits. The view's logits are sampled
back onto the model's low-resolution frame (`views_to_windows`), so that the rest of dessam sees the
same `DecodedMasks` windows as from any other SAM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from ..geometry.mapping import OUTSIDE


def view_squares(boxes: torch.Tensor, context: float, min_side: float) -> torch.Tensor:
    """(N, 4) x1y1x2y2 squares centred on each box (N, 4), `context` x its longer side wide."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sides = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * context
    half = sides.clamp(min=min_side)[:, None] / 2
    return torch.cat([centres - half, centres + half], 1)


def cut_views(images: torch.Tensor, index: torch.Tensor, squares: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, size, size): the square `squares[i]` of `images[index[i]]`, resampled bilinearly
    (zeros beyond the image: the mean colour of normalised images)."""
    rois = torch.cat([index.to(squares.dtype)[:, None], squares], 1)
    return roi_align(images, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)


def boxes_in_views(boxes: torch.Tensor, squares: torch.Tensor, size: int) -> torch.Tensor:
    """Boxes (N, 4) in the pixel coordinates of their views (`size` px across)."""
    sides = (squares[:, 2] - squares[:, 0])[:, None]
    return (boxes - squares[:, :2].repeat(1, 2)) * size / sides


def views_to_windows(logits: torch.Tensor, squares: torch.Tensor, origins: torch.Tensor, size: int,
                     pixels_per_logit: float) -> torch.Tensor:
    """(N, 1, size, size): each view's logits (N, 1, r, r) sampled at the logits of its window of the
    frame (`origins` (N, 2) row, col of the window's first logit; one logit covers
    `pixels_per_logit` input pixels); `OUTSIDE` beyond the view."""
    steps = (torch.arange(size, device=logits.device, dtype=logits.dtype) + 0.5) * pixels_per_logit
    ys = origins[:, :1].to(logits.dtype) * pixels_per_logit + steps[None]          # (N, size) input pixels
    xs = origins[:, 1:].to(logits.dtype) * pixels_per_logit + steps[None]
    sides = (squares[:, 2] - squares[:, 0])[:, None]
    gy = (ys - squares[:, 1:2]) / sides * 2 - 1                                  # grid_sample's [-1, 1]
    gx = (xs - squares[:, 0:1]) / sides * 2 - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), -1)  # (N, size, size, 2) x, y
    sampled = F.grid_sample(logits, grid, mode="bilinear", padding_mode="border", align_corners=False)
    inside = (grid.abs() <= 1).all(-1)[:, None]
    return torch.where(inside, sampled, sampled.new_tensor(OUTSIDE))
