"""DES-SAM's mask losses: self-distillation and the edge-aware enhanced loss.

- Distillation: the student's low-resolution logits against the teacher's pseudo-mask (teacher
  logits > 0): binary cross-entropy plus Dice.
- Edge-aware loss, on the student's probability map cropped to each matched annotated box and
  resampled to `crop` x `crop`, with the image cropped the same way; the padding and the bottom
  rows of each image are left out, as in the authors' code:
  * local pairwise term: for each pixel and its 8 neighbours (3 x 3 at a dilation), colour
    similarity s = exp(-||Lab_i - Lab_j|| / 2) weighs the disagreement of the two probabilities:
    sum(s * |p_i - p_j|) / max(sum(s), 1);
  * global term (Chan-Vese level-set energy) on the raw 0-255 RGB colours: with c_in, c_out the
    p-weighted mean colours inside and outside, the mean over pixels and channels of
    |I - c_in|^2 p + |I - c_out|^2 (1 - p).
docs/fidelity.md compares every choice here with the authors' released code.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align


DICE_SMOOTH = 1e-3  # the authors' eps 1e-6 at their scale of 1000


def distillation_losses(student_logits: torch.Tensor, teacher_logits: torch.Tensor, images: int = 1,
                        frame_pixels: Optional[int] = None, targets: Optional[torch.Tensor] = None,
                        weights: Optional[torch.Tensor] = None):
    """(bce, dice) of student logits against the teacher's thresholded pseudo-mask.

    As in the official implementation, each prompt's BCE is the mean over its pixels and the
    prompts' losses are summed (per image: divided by `images`, the images in the batch), so the
    distillation grows with the number of distilled prompts while the edge-aware terms are means.
    Dice is 1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s) with s = 1e-3: the authors' `dice_loss`
    divides p and t by 1000 and adds 1e-6. With local decoding the logits cover a window of the
    low-resolution frame (the same window for student and teacher); `frame_pixels`, the frame's
    size, keeps BCE a mean over the whole frame (pixels beyond the window count as agreeing).
    `targets` (0/1, the shape of the logits) replace the pseudo-mask where given masks supervise
    some prompts (`dessam.models.frame_masks`); `weights` (N,) scale each prompt's two terms.
    """
    pseudo = (teacher_logits > 0).to(student_logits.dtype) if targets is None else targets.to(student_logits.dtype)
    pixels = frame_pixels or student_logits[0, 0].numel()
    bce = F.binary_cross_entropy_with_logits(student_logits, pseudo, reduction="none").flatten(1).sum(1) / pixels
    prob = student_logits.sigmoid().flatten(1)
    target = pseudo.flatten(1)
    dice = 1 - (2 * (prob * target).sum(1) + DICE_SMOOTH) / (prob.sum(1) + target.sum(1) + DICE_SMOOTH)
    if weights is not None:
        bce, dice = bce * weights, dice * weights
    return bce.sum() / images, dice.sum() / images


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """CIE Lab (D65) of an RGB image tensor (B, 3, H, W) with values 0-255."""
    c = (rgb / 255.0).clamp(0, 1)
    linear = torch.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    matrix = linear.new_tensor([
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ])
    xyz = torch.einsum("ij,bjhw->bihw", matrix, linear)
    xyz = xyz / xyz.new_tensor([0.950456, 1.0, 1.088754]).view(1, 3, 1, 1)
    eps = 0.008856
    f = torch.where(xyz > eps, xyz.clamp(min=eps) ** (1 / 3), 7.787 * xyz + 16 / 116)
    lightness = torch.where(xyz[:, 1:2] > eps, 116 * f[:, 1:2] - 16, 903.3 * xyz[:, 1:2])
    a = 500 * (f[:, 0:1] - f[:, 1:2])
    b = 200 * (f[:, 1:2] - f[:, 2:3])
    return torch.cat([lightness, a, b], dim=1)


def _rois(boxes: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
    return torch.cat([image_index.to(boxes.dtype).unsqueeze(1), boxes], dim=1)


def crop_to_boxes(maps: torch.Tensor, boxes: torch.Tensor, image_index: torch.Tensor, size: int,
                  spatial_scale: float) -> torch.Tensor:
    """Resample each box of `maps[image_index]` to size x size (RoIAlign: bilinear, half-pixel
    aligned, adaptive sampling, as the MMCV RoIAlign the authors call)."""
    return roi_align(maps, _rois(boxes, image_index), output_size=size, spatial_scale=spatial_scale,
                     sampling_ratio=0, aligned=True)


def valid_region(resized_hw: list, size: int, bottom_rows: int, device=None) -> torch.Tensor:
    """(B, 1, S, S) float: 1 where the edge-aware loss may look, 0 on the padding and on the bottom
    `bottom_rows x h / S` rows of each image (the authors' `bottom_pixels_removed`, scaled as they
    scale it to the padded input)."""
    valid = torch.zeros((len(resized_hw), 1, size, size), device=device)
    for index, (h, w) in enumerate(resized_hw):
        removed = int(bottom_rows * float(h) / float(size))
        valid[index, 0, : max(int(h) - removed, 0), : int(w)] = 1
    return valid


def _neighbours(x: torch.Tensor, dilation: int) -> torch.Tensor:
    """(N, C, 8, K, K): each pixel's 8 neighbours at `dilation` (zero outside the crop)."""
    n, c, k, _ = x.shape
    unfolded = F.unfold(x, kernel_size=3, dilation=dilation, padding=dilation).view(n, c, 9, k, k)
    return unfolded[:, :, [0, 1, 2, 3, 5, 6, 7, 8]]


def colour_similarity(lab: torch.Tensor, valid: torch.Tensor, dilation: int = 2) -> torch.Tensor:
    """(N, 8, K, K) similarity exp(-||Lab_i - Lab_j|| / 2) of each pixel i to its 8 neighbours j at
    `dilation`, zero where the neighbour lies outside the valid region (as the authors' code)."""
    difference = lab[:, :, None] - _neighbours(lab, dilation)
    distance = (difference * difference).sum(dim=1).sqrt()  # ~10x faster than .norm over a strided axis
    return torch.exp(-distance / 2) * _neighbours(valid, dilation)[:, 0]


def local_pairwise_loss(prob: torch.Tensor, similarity: torch.Tensor, dilation: int = 2, tau: float = 0.0):
    """Neighbouring pixels of similar colour should get the same probability.

    prob: (N, 1, K, K) probabilities; similarity: (N, 8, K, K) from `colour_similarity`.
    sum(s * |p_i - p_j|) / max(sum(s), 1) over every pixel and its 8 neighbours at `dilation`, the
    similarity used as a continuous weight; pairs with s < tau are left out (tau = 0: none, as in the
    authors' code, which configures 0.3 but never applies it).
    """
    weight = similarity * (similarity >= tau).to(similarity.dtype) if tau > 0 else similarity
    disagreement = (prob - _neighbours(prob, dilation)[:, 0]).abs()
    return (weight * disagreement).sum() / weight.sum().clamp(min=1.0)


def global_level_set_loss(prob: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Chan-Vese energy of the soft partition `prob` (N, 1, K, K) of `image` crops (N, C, K, K).

    With c_in, c_out the prob-weighted mean colours inside and outside, the mean over crops, pixels
    and channels of |I - c_in|^2 p + |I - c_out|^2 (1 - p).
    """
    inside = prob
    outside = 1 - prob
    c_in = (image * inside).sum((2, 3), keepdim=True) / inside.sum((2, 3), keepdim=True).clamp(min=1e-5)
    c_out = (image * outside).sum((2, 3), keepdim=True) / outside.sum((2, 3), keepdim=True).clamp(min=1e-5)
    energy = (image - c_in) ** 2 * inside + (image - c_out) ** 2 * outside
    return energy.mean()


def edge_aware_losses(student_logits: torch.Tensor, mask_boxes: torch.Tensor, colour_boxes: torch.Tensor,
                      image_index: torch.Tensor, images_rgb: torch.Tensor, valid: torch.Tensor,
                      images_normalised: Optional[torch.Tensor] = None, crop: int = 72, dilation: int = 2,
                      mask_dilation: int = 2, tau: float = 0.0, logits_scale: Optional[float] = None,
                      logits_origins: Optional[torch.Tensor] = None):
    """(local, global) edge-aware terms for N student masks.

    student_logits: (N, 1, h, w) low-res logits over the padded input frame (S x S), or over a window
    of it whose top-left lies at `logits_origins` (N, 2: x, y in input pixels) with `logits_scale`
    logits per input pixel; the student's
    logits are cropped at `mask_boxes` and the image at `colour_boxes` (N, 4, input frame; both the
    matched annotated boxes by default), each resampled to `crop` x `crop`; image_index: (N,) their
    image; images_rgb: (B, 3, S, S) padded input images, 0-255; valid: (B, 1, S, S) from
    `valid_region`. The global term reads the raw 0-255 colours (the authors'), or the SAM-normalised
    image when `images_normalised` is given. Left-out pixels keep colour 0 there, as in the authors' code.
    """
    size = images_rgb.shape[-1]
    own = torch.arange(len(mask_boxes), device=mask_boxes.device)
    scale = logits_scale or student_logits.shape[-1] / size
    in_window = mask_boxes if logits_origins is None else mask_boxes - logits_origins.to(mask_boxes.dtype).repeat(1, 2)
    prob_crops = crop_to_boxes(student_logits, in_window, own, crop, scale).sigmoid()
    with torch.no_grad():
        valid_crops = crop_to_boxes(valid, colour_boxes, image_index, crop, 1.0)
        lab_crops = crop_to_boxes(rgb_to_lab(images_rgb), colour_boxes, image_index, crop, 1.0)
        similarity = colour_similarity(lab_crops, valid_crops, dilation)
        source = images_rgb if images_normalised is None else images_normalised
        image_crops = crop_to_boxes(source, colour_boxes, image_index, crop, 1.0) * valid_crops
    return (
        local_pairwise_loss(prob_crops, similarity, mask_dilation, tau),
        global_level_set_loss(prob_crops, image_crops),
    )
