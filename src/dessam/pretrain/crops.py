"""What the teacher learns from: crops of the corpus drawn at random, each nucleus prompted with a
jittered box, and the losses of the masks the decoder gives for them, whole-image or per-box view."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.augment import random_view
from ..data.corpus import synthetic_scene
from ..models.box_views import boxes_in_views, cut_views
from ..models.prompted_decoder import PromptedMaskDecoder, prompt_windows
from .recipe import Recipe


MIN_PROMPT_AREA = 16    # pixels of a nucleus visible in a crop, for it to be prompted


@dataclass
class Prompted:
    """One crop's prompts: jittered boxes, and each nucleus's id in the crop's labels."""

    boxes: np.ndarray    # (N, 4) x1y1x2y2, jittered
    exact: np.ndarray    # (N, 4) the nuclei's own boxes
    ids: np.ndarray      # (N,)


def nucleus_boxes(labels: np.ndarray, min_area: int = MIN_PROMPT_AREA) -> tuple:
    """(ids, boxes x1y1x2y2 as pixel edges) of the nuclei of an instance map with at least
    `min_area` pixels."""
    from scipy import ndimage

    ids, boxes = [], []
    areas = np.bincount(labels.ravel())
    for index, region in enumerate(ndimage.find_objects(labels)):
        if region is None or areas[index + 1] < min_area:
            continue
        ids.append(index + 1)
        boxes.append((region[1].start, region[0].start, region[1].stop, region[0].stop))
    return np.asarray(ids, np.int64), np.asarray(boxes, np.float32).reshape(-1, 4)


def jitter_boxes(boxes: np.ndarray, rng: np.random.Generator, shape: tuple, noise: float = 0.08,
                 wide_noise: float = 0.2, wide_share: float = 0.15) -> np.ndarray:
    """Boxes (N, 4) with each edge moved by a normal error of `noise` x the box side (`wide_noise`
    for a `wide_share` of the boxes), at most 40 % of the side, kept inside the image of `shape`
    (H, W) and at least one pixel wide."""
    sides = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, 1)
    scale = np.where(rng.random(len(boxes)) < wide_share, wide_noise, noise)[:, None]
    error = np.clip(rng.normal(0.0, 1.0, boxes.shape) * scale, -0.4, 0.4) * sides
    out = boxes + error
    out[:, 0::2] = np.clip(out[:, 0::2], 0, shape[1])
    out[:, 1::2] = np.clip(out[:, 1::2], 0, shape[0])
    out[:, 2:] = np.maximum(out[:, 2:], out[:, :2] + 1)
    return out.astype(np.float32)


def draw_crops(rng: np.random.Generator, datasets: list, weights: np.ndarray, recipe: Recipe) -> tuple:
    """`recipe.batch_size` augmented crops (B, 3, C, C float 0-255), their labels and prompts, and
    the dataset each came from."""
    images, labels, prompts, sources = [], [], [], []
    while len(images) < recipe.batch_size:
        which = int(rng.choice(len(datasets), p=weights))
        dataset = datasets[which]
        sample = (synthetic_scene(dataset.spec.generator, rng) if dataset.synthetic
                  else dataset.train[int(rng.integers(len(dataset.train)))])
        crop, crop_labels = random_view(rng, sample.image, sample.labels, recipe.crop, reference=recipe.nucleus_px)
        ids, boxes = nucleus_boxes(crop_labels)
        if not len(ids):
            continue
        pick = rng.permutation(len(ids))[:recipe.max_prompts]
        jittered = jitter_boxes(boxes[pick], rng, crop_labels.shape, recipe.box_noise, recipe.box_noise_wide,
                                recipe.wide_errors)
        images.append(torch.from_numpy(crop).permute(2, 0, 1).float())
        labels.append(crop_labels)
        prompts.append(Prompted(jittered, boxes[pick], ids[pick]))
        sources.append(which)
    return torch.stack(images), labels, prompts, sources


def window_targets(labels: np.ndarray, ids: np.ndarray, origins: np.ndarray, size: int) -> torch.Tensor:
    """(N, 1, size, size) float: nucleus `ids[i]`'s pixels in the window at `origins[i]` (row, col,
    input pixels) of the instance map; 0 beyond the map."""
    out = np.zeros((len(ids), 1, size, size), np.float32)
    height, width = labels.shape
    for index, (identity, (row, col)) in enumerate(zip(ids, origins)):
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + size, height), min(col + size, width)
        if r1 > r0 and c1 > c0:
            out[index, 0, r0 - row:r1 - row, c0 - col:c1 - col] = labels[r0:r1, c0:c1] == identity
    return torch.from_numpy(out)


def near_box(boxes: torch.Tensor, origins: torch.Tensor, size: int, pixels_per_logit: float,
             margin: float = 8.0) -> torch.Tensor:
    """(N, 1, size, size) bool: the logits whose pixel centre lies inside each box grown by `margin`
    pixels; `origins` (N, 2) are each window's first logit as (row, col) input pixels."""
    centres = (torch.arange(size, device=boxes.device) + 0.5) * pixels_per_logit
    ys = origins[:, :1].float() + centres[None]
    xs = origins[:, 1:].float() + centres[None]
    inside_y = (ys >= boxes[:, 1:2] - margin) & (ys <= boxes[:, 3:4] + margin)
    inside_x = (xs >= boxes[:, 0:1] - margin) & (xs <= boxes[:, 2:3] + margin)
    return (inside_y[:, :, None] & inside_x[:, None, :])[:, None]


def mask_losses(logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor, near: torch.Tensor) -> tuple:
    """Per prompt (loss (N,), achieved IoU (N,)) of logits (N, 1, k, k) against target masks."""
    near = near.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    bce_near = (bce * near).flatten(1).sum(1) / near.flatten(1).sum(1).clamp(min=1)
    bce_far = (bce * (1 - near)).flatten(1).sum(1) / (1 - near).flatten(1).sum(1).clamp(min=1)
    prob, flat = logits.sigmoid().flatten(1), target.flatten(1)
    dice = 1 - (2 * (prob * flat).sum(1) + 1) / (prob.sum(1) + flat.sum(1) + 1)
    with torch.no_grad():
        pred, truth = (logits > 0).flatten(1), flat > 0.5
        iou = (pred & truth).sum(1) / (pred | truth).sum(1).clamp(min=1)
    return bce_near + bce_far + dice + (iou_pred[:, 0] - iou.float()) ** 2, iou


def in_frame(embedding: torch.Tensor, grid: int, offset: tuple) -> torch.Tensor:
    """The crop's embedding (1, C, h, w) placed at `offset` (row, col tokens) of a zero grid x grid
    frame: the decoder then sees the positional encoding of a place in the model's full input, as
    in prediction, not of a small frame of the crop's own size."""
    frame = embedding.new_zeros(embedding.shape[:2] + (grid, grid))
    frame[:, :, offset[0]:offset[0] + embedding.shape[2], offset[1]:offset[1] + embedding.shape[3]] = embedding
    return frame


def crop_losses(decoder: PromptedMaskDecoder, embedding: torch.Tensor, labels: np.ndarray, prompted: Prompted,
                margin: int, offset: tuple = (0, 0)) -> tuple:
    """Summed loss and the achieved IoUs of one crop's prompts, each decoded on its window.

    embedding: the crop's (1, C, h, w); it is placed at `offset` (tokens) of the model's input
    frame, and every window stays inside the crop."""
    device = embedding.device
    boxes = torch.from_numpy(prompted.boxes).to(device)
    exact = torch.from_numpy(prompted.exact).to(device)
    window_boxes = torch.cat([torch.minimum(boxes[:, :2], exact[:, :2]), torch.maximum(boxes[:, 2:], exact[:, 2:])], 1)
    origins, size = prompt_windows(window_boxes, decoder.stride, embedding.shape[-1], margin)
    if origins is None:  # windows as large as the crop
        origins = torch.zeros((len(boxes), 2), dtype=torch.long, device=device)
    shift = torch.tensor(offset, dtype=torch.long, device=device)
    pixels = (shift * decoder.stride).flip(0).float().repeat(2)  # x, y, x, y
    decoded = decoder(in_frame(embedding, decoder.grid, offset), boxes + pixels, None, use_token=False,
                      origins=origins + shift, size=size)
    pixels_per_logit = decoder.stride / 4.0
    starts = (origins * decoder.stride).long()  # window origins in crop pixels (row, col)
    logits = decoded.logits
    if pixels_per_logit != 1.0:  # a coarser teacher: compare at the logits' resolution
        target = window_targets(labels, prompted.ids, starts.cpu().numpy(), int(logits.shape[-1] * pixels_per_logit))
        target = F.adaptive_avg_pool2d(target, logits.shape[-2:])
    else:
        target = window_targets(labels, prompted.ids, starts.cpu().numpy(), logits.shape[-1])
    near = near_box(exact, starts, logits.shape[-1], pixels_per_logit)
    loss, iou = mask_losses(logits, decoded.iou, target.to(device), near)
    return loss.sum(), iou


def view_losses(decoder: PromptedMaskDecoder, images: torch.Tensor, labels: list, prompts: list) -> tuple:
    """Summed loss and the achieved IoUs of every prompt of a batch, each decoded on its own view.

    images: the normalised crops (B, 3, C, C); each prompt's target is its nucleus resampled onto its
    view as the view's pixels are."""
    device = images.device
    boxes = torch.from_numpy(np.concatenate([p.boxes for p in prompts])).to(device)
    exact = torch.from_numpy(np.concatenate([p.exact for p in prompts])).to(device)
    index = torch.cat([torch.full((len(p.ids),), i, dtype=torch.long) for i, p in enumerate(prompts)]).to(device)
    ids = torch.from_numpy(np.concatenate([p.ids for p in prompts])).to(device)
    logits, iou_pred, squares = decoder.decode_views(images, boxes, index, use_token=False)
    size = logits.shape[-1]
    maps = torch.from_numpy(np.stack(labels).astype(np.int64)).to(device)
    nuclei = (maps[index] == ids[:, None, None]).float()[:, None]            # (N, 1, C, C)
    target = cut_views(nuclei, torch.arange(len(ids), device=device), squares, size)
    exact_in_view = boxes_in_views(exact, squares, size)
    near = near_box(exact_in_view, torch.zeros((len(ids), 2), device=device), size, 1.0, margin=size / 16)
    loss, iou = mask_losses(logits, iou_pred, target, near)
    return loss.sum(), iou
