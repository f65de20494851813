"""DES-SAM's mask losses: self-distillation and the edge-aware enhanced loss.

- Distillation: the student's low-resolution logits against the teacher's pseudo-mask (teacher
  logits > 0): binary cross-entropy plus Dice.
- Edge-aware loss, on the student's probability map cropped to each matched annotated box and
  resampled to `crop` x `crop`, with the image cropped the same way:
  * local pairwise term: for each pixel and its 8 neighbours (3 x 3 at a dilation), colour
    similarity s = exp(-||Lab_i - Lab_j|| / 2); pairs with s >= tau should agree:
    sum(s * |p_i - p_j|) / sum(s) over those pairs;
  * global term (Chan-Vese level-set energy): with c_in, c_out the p-weighted mean colours inside
    and outside, the mean over pixels and channels of |I - c_in|^2 p + |I - c_out|^2 (1 - p).
    I is the image normalised with SAM's pixel mean and std.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align


def distillation_losses(student_logits: torch.Tensor, teacher_logits: torch.Tensor, images: int = 1):
    """(bce, dice) of student logits against the teacher's thresholded pseudo-mask.

    As in the official implementation, each prompt's BCE is the mean over its pixels and the
    prompts' losses are summed (per image: divided by `images`, the images in the batch), so the
    distillation grows with the number of distilled prompts while the edge-aware terms are means.
    """
    pseudo = (teacher_logits > 0).to(student_logits.dtype)
    bce = F.binary_cross_entropy_with_logits(student_logits, pseudo, reduction="none").flatten(1).mean(1)
    prob = student_logits.sigmoid().flatten(1)
    target = pseudo.flatten(1)
    dice = 1 - (2 * (prob * target).sum(1) + 1) / (prob.sum(1) + target.sum(1) + 1)
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
    """Resample each box of `maps[image_index]` to size x size (RoIAlign, bilinear)."""
    return roi_align(maps, _rois(boxes, image_index), output_size=size, spatial_scale=spatial_scale,
                     sampling_ratio=2, aligned=True)


def local_pairwise_loss(prob: torch.Tensor, lab: torch.Tensor, dilation: int = 1, tau: float = 0.3):
    """Neighbouring pixels of similar colour should get the same probability.

    prob: (N, 1, K, K) probabilities; lab: (N, 3, K, K) Lab colours of the same crops.
    """
    n, _, k, _ = prob.shape
    pad = dilation
    unfold = lambda x: F.unfold(x, kernel_size=3, dilation=dilation, padding=pad).view(n, x.shape[1], 9, k * k)
    lab_nb = unfold(lab)
    prob_nb = unfold(prob)
    valid_nb = unfold(torch.ones_like(prob))
    centre = 4
    neighbours = [i for i in range(9) if i != centre]
    difference = lab_nb[:, :, neighbours] - lab_nb[:, :, centre:centre + 1]
    colour_distance = (difference * difference).sum(dim=1).sqrt()  # ~10x faster than .norm over a strided axis
    similarity = torch.exp(-colour_distance / 2)
    keep = (similarity >= tau).to(prob.dtype) * valid_nb[:, 0, neighbours]
    weight = similarity * keep
    disagreement = (prob_nb[:, 0, neighbours] - prob_nb[:, 0, centre:centre + 1]).abs()
    return (weight * disagreement).sum() / weight.sum().clamp(min=1e-6)


def global_level_set_loss(prob: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Chan-Vese energy of the soft partition `prob` (N, 1, K, K) of `image` crops (N, C, K, K)."""
    inside = prob
    outside = 1 - prob
    c_in = (image * inside).sum((2, 3), keepdim=True) / inside.sum((2, 3), keepdim=True).clamp(min=1e-6)
    c_out = (image * outside).sum((2, 3), keepdim=True) / outside.sum((2, 3), keepdim=True).clamp(min=1e-6)
    energy = (image - c_in) ** 2 * inside + (image - c_out) ** 2 * outside
    return energy.mean()


def edge_aware_losses(student_logits: torch.Tensor, boxes: torch.Tensor, image_index: torch.Tensor,
                      images_rgb: torch.Tensor, images_normalised: torch.Tensor, crop: int = 72,
                      dilation: int = 1, tau: float = 0.3):
    """(local, global) edge-aware terms for N student masks.

    student_logits: (N, 1, h, w) low-res logits over the padded input frame (S x S);
    boxes: (N, 4) the matched annotated boxes in the input frame; image_index: (N,) their image;
    images_rgb / images_normalised: (B, 3, S, S) the padded input images.
    """
    size = images_rgb.shape[-1]
    prob = student_logits.sigmoid()
    own = torch.arange(len(boxes), device=boxes.device)
    prob_crops = crop_to_boxes(prob, boxes, own, crop, student_logits.shape[-1] / size)
    with torch.no_grad():
        lab_crops = rgb_to_lab(crop_to_boxes(images_rgb, boxes, image_index, crop, 1.0))
        image_crops = crop_to_boxes(images_normalised, boxes, image_index, crop, 1.0)
    return (
        local_pairwise_loss(prob_crops, lab_crops, dilation, tau),
        global_level_set_loss(prob_crops, image_crops),
    )
