"""Pre-train the bundled default teacher on generic synthetic scenes, and measure it.

The teacher learns what SAM learns from SA-1B, on a small scale: given an image and a box around
an object, draw that object's mask. Every step draws fresh "anything" scenes
(`dessam.data.anything`), prompts the model with each of (up to
`max_prompts`) objects per scene, as SAM is trained: either a jittered box (noise of 10 % of the box
side, at most 20 px), trained on the first mask token (the single-mask output that dessam uses for
box prompts), or -- for a `point_fraction` of the prompts -- one foreground point drawn inside the
object, trained on the best of the three multimask outputs (a point is ambiguous). Losses: BCE +
Dice on the low-resolution logits against the area-downsampled ground truth, plus MSE of the IoU
head against the IoU it achieved. Point prompts make the image encoder say where whole objects are,
not only which pixels of a given box belong to one, which is what dessam's detector reads.
The result depends on the seed and the number of steps only, never on wall-clock time (except when
`minutes` cuts a run short).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide
from tqdm import tqdm

from ..atomic import atomic_path
from ..data.anything import instance_boxes, make_anything_scene
from ..errors import DessamError
from ..models.default_teacher import DEFAULT_ARCH, DEFAULT_IMAGE_SIZE, build_default_architecture, teacher_file

BOX_NOISE = 0.1  # of the box side
POINT_FRACTION = 0.5  # of the prompts that are one foreground point instead of a box
BOX_NOISE_MAX = 20.0  # pixels
HELD_OUT_SEED_OFFSET = 1_000_003  # held-out scenes come from another random stream than training
CYTOLOGY_EVAL_STREAM = 7_310_529  # cytology test scenes: a seed stream nothing else in dessam uses
CYTOLOGY_SCENES = ("mixed", "cluster", "patch")


def jitter_boxes(boxes: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Boxes (N, 4) x1 y1 x2 y2 with SAM-style noise on every coordinate, kept inside the image."""
    sides = np.repeat(np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1), 2, axis=1)[:, [0, 2, 1, 3]]
    noise = np.clip(rng.normal(0.0, 1.0, boxes.shape) * BOX_NOISE * sides, -BOX_NOISE_MAX, BOX_NOISE_MAX)
    out = np.clip(boxes + noise, 0, size)
    out[:, 2:] = np.maximum(out[:, 2:], out[:, :2] + 1)
    return out.astype(np.float32)


def sample_points(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One point (x, y) at a pixel centre drawn uniformly inside each mask (N, H, W) -> (N, 2)."""
    points = np.zeros((len(masks), 2), np.float32)
    for index, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        pick = int(rng.integers(len(ys)))
        points[index] = (xs[pick] + 0.5, ys[pick] + 0.5)
    return points


def sample_batch(rng: np.random.Generator, batch_size: int, size: int, max_prompts: int,
                 point_fraction: float = 0.0):
    """Images (B, 3, S, S) float 0-255 and per image a `Prompts` of its picked objects."""
    images, prompts = [], []
    while len(images) < batch_size:
        image, labels = make_anything_scene(rng, size)
        ids, boxes = instance_boxes(labels)
        if len(ids) == 0:
            continue
        pick = rng.permutation(len(ids))[:max_prompts]
        masks = labels[None] == ids[pick, None, None]
        is_point = rng.random(len(pick)) < point_fraction if point_fraction > 0 else np.zeros(len(pick), bool)
        images.append(torch.from_numpy(image).permute(2, 0, 1).float())
        prompts.append(Prompts(
            boxes=torch.from_numpy(jitter_boxes(boxes[pick], rng, size)),
            exact_boxes=torch.from_numpy(boxes[pick].astype(np.float32)),
            points=torch.from_numpy(sample_points(masks, rng) if is_point.any() else np.zeros((len(pick), 2), np.float32)),
            is_point=torch.from_numpy(is_point),
            masks=torch.from_numpy(masks),
        ))
    return torch.stack(images), prompts


@dataclass
class Prompts:
    """The prompts of one training image: per object a jittered box or (where `is_point`) one point."""

    boxes: torch.Tensor        # (N, 4) jittered
    exact_boxes: torch.Tensor  # (N, 4) the objects' own boxes (where the loss looks closely)
    points: torch.Tensor       # (N, 2) x, y (used where is_point)
    is_point: torch.Tensor     # (N,) bool
    masks: torch.Tensor        # (N, S, S) bool

    def to(self, device) -> "Prompts":
        return Prompts(*(getattr(self, f.name).to(device) for f in fields(self)))


def decode_boxes(sam: Sam, embedding: torch.Tensor, boxes: torch.Tensor):
    """Low-res logits (N, 1, 4h, 4w) and IoU predictions (N, 1) of the first mask token for one image."""
    sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
    return _decode(sam, embedding, sparse, dense, multimask=False)


def decode_points(sam: Sam, embedding: torch.Tensor, points: torch.Tensor):
    """Low-res logits (N, 3, 4h, 4w) and IoU predictions (N, 3) of the three multimask tokens for
    one foreground point (N, 2) per prompt."""
    labels = torch.ones(len(points), 1, dtype=torch.int, device=points.device)
    sparse, dense = sam.prompt_encoder(points=(points[:, None], labels), boxes=None, masks=None)
    return _decode(sam, embedding, sparse, dense, multimask=True)


def _decode(sam: Sam, embedding: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor, multimask: bool):
    return sam.mask_decoder(
        image_embeddings=embedding,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )


def box_regions(boxes: torch.Tensor, shape: tuple, image_size: int, margin: float = 8.0) -> torch.Tensor:
    """(N, 1, h, w) bool: the low-res pixels inside each box grown by `margin` image pixels."""
    scale = shape[-1] / image_size
    centres = (torch.arange(shape[-1], device=boxes.device) + 0.5) / scale
    x1, y1, x2, y2 = [(boxes[:, i] + (margin if i > 1 else -margin))[:, None] for i in range(4)]
    inside_x = (centres[None] >= x1) & (centres[None] <= x2)
    inside_y = (centres[None] >= y1) & (centres[None] <= y2)
    return (inside_y[:, :, None] & inside_x[:, None, :])[:, None]


def multimask_losses(logits: torch.Tensor, iou_pred: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor,
                     image_size: int):
    """Per prompt (loss (N,), achieved IoUs (N, K)) of low-res logits (N, K, h, w) against masks (N, H, W).

    BCE is averaged separately near the object's box and away from it (the two halves weigh the same),
    so that small objects are not drowned by the background; plus Dice. Of K outputs only the best
    one's mask loss counts (SAM's rule for ambiguous prompts); the IoU head learns all K IoUs (MSE).
    """
    target = F.adaptive_avg_pool2d(masks[:, None].float(), logits.shape[-2:])
    near = box_regions(boxes, logits.shape, image_size).float()
    bce = F.binary_cross_entropy_with_logits(logits, target.expand_as(logits), reduction="none")
    bce_near = (bce * near).flatten(2).sum(2) / near.flatten(2).sum(2).clamp(min=1)
    bce_far = (bce * (1 - near)).flatten(2).sum(2) / (1 - near).flatten(2).sum(2).clamp(min=1)
    prob = logits.sigmoid().flatten(2)
    flat = target.flatten(2)
    dice = 1 - (2 * (prob * flat).sum(2) + 1) / (prob.sum(2) + flat.sum(2) + 1)
    with torch.no_grad():
        pred, truth = (logits > 0).flatten(2), (flat > 0.5)
        iou = (pred & truth).sum(2) / (pred | truth).sum(2).clamp(min=1)
    mask_loss = (bce_near + bce_far + dice).min(dim=1).values
    iou_loss = ((iou_pred - iou.float()) ** 2).mean(dim=1)
    return mask_loss + iou_loss, iou


def prompt_losses(sam: Sam, embedding: torch.Tensor, prompts: Prompts, image_size: int):
    """Mean loss over one image's prompts, and the IoUs of the box prompts' masks."""
    total = embedding.new_zeros(())
    box = ~prompts.is_point
    ious = embedding.new_zeros((0,))
    if box.any():
        logits, iou_pred = decode_boxes(sam, embedding, prompts.boxes[box])
        loss, iou = multimask_losses(logits, iou_pred, prompts.masks[box], prompts.boxes[box], image_size)
        total = total + loss.sum()
        ious = iou[:, 0]
    if prompts.is_point.any():
        point = prompts.is_point
        logits, iou_pred = decode_points(sam, embedding, prompts.points[point])
        loss, _ = multimask_losses(logits, iou_pred, prompts.masks[point], prompts.exact_boxes[point], image_size)
        total = total + loss.sum()
    return total / len(prompts.masks), ious


def _learning_rate(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup, 1)
    return lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


@torch.no_grad()
def evaluate_box_prompt_iou(sam: Sam, scenes: Iterable, chunk: int = 64, progress: bool = False) -> float:
    """Mean mask IoU over all objects of `scenes` ((image HxWx3 uint8, labels HxW) pairs), each
    prompted with its exact ground-truth box; masks are computed at the original image size."""
    sam.eval()
    device = sam.pixel_mean.device
    resize = ResizeLongestSide(sam.image_encoder.img_size)
    ious = []
    for image, labels in tqdm(scenes, desc="box-prompt IoU", disable=not progress, leave=False):
        ids, boxes = instance_boxes(labels)
        if len(ids) == 0:
            continue
        resized = resize.apply_image(np.ascontiguousarray(image))
        tensor = torch.as_tensor(resized, device=device).permute(2, 0, 1).float()[None]
        embedding = sam.image_encoder(sam.preprocess(tensor))
        scaled = torch.as_tensor(resize.apply_boxes(boxes, labels.shape[:2]), device=device, dtype=torch.float32)
        for start in range(0, len(ids), chunk):
            low, _ = decode_boxes(sam, embedding, scaled[start : start + chunk])
            masks = sam.postprocess_masks(low, tuple(resized.shape[:2]), tuple(labels.shape[:2]))[:, 0] > 0
            truth = torch.as_tensor(labels.astype(np.int64), device=device)[None] == torch.as_tensor(
                ids[start : start + chunk], device=device
            )[:, None, None]
            inter = (masks & truth).flatten(1).sum(1)
            union = (masks | truth).flatten(1).sum(1).clamp(min=1)
            ious.append((inter / union).cpu())
    return float(torch.cat(ious).mean()) if ious else float("nan")


def held_out_anything_scenes(count: int, seed: int = 0, size: int = DEFAULT_IMAGE_SIZE) -> list:
    """`count` anything-scenes from a random stream that training with `seed` never draws from."""
    rng = np.random.default_rng(seed + HELD_OUT_SEED_OFFSET)
    return [make_anything_scene(rng, size) for _ in range(count)]


def cytology_test_scenes(scene: str, n: int = 20, seed: int = 0, size: int = DEFAULT_IMAGE_SIZE) -> list:
    """`n` synthetic cytology scenes of kind `scene`, from a stream disjoint from every other use of
    `dessam.data.synth` (its datasets seed with [seed, split, index]; here the key has four parts)."""
    from ..data.synth import make_scene

    code = CYTOLOGY_SCENES.index(scene)
    return [make_scene(np.random.default_rng([CYTOLOGY_EVAL_STREAM, seed, code, i]), scene=scene, size=(size, size))
            for i in range(n)]


def evaluate_on_cytology(sam: Sam, n: int = 20, seed: int = 0, scenes: Iterable[str] = CYTOLOGY_SCENES,
                         progress: bool = False) -> dict:
    """Mean box-prompt mask IoU of `sam` on `n` unseen synthetic cytology scenes of each kind,
    every nucleus prompted with its ground-truth box: {"mixed": ..., "cluster": ..., "patch": ...}.
    The teacher never trains on these scenes: they only measure how well it transfers."""
    size = int(sam.image_encoder.img_size)
    return {scene: evaluate_box_prompt_iou(sam, cytology_test_scenes(scene, n, seed, size), progress=progress)
            for scene in scenes}


def _check_options(steps, minutes, point_fraction, lr, init) -> None:
    """Reject impossible settings before anything is built or written."""
    if int(steps) < 0:
        raise DessamError(f"--steps {steps}: give 0 or more training steps (0 writes the starting weights)")
    if minutes is not None and minutes <= 0:
        raise DessamError(f"--minutes {minutes}: give a positive number of minutes, or leave it out")
    if not 0.0 <= point_fraction <= 1.0:
        raise DessamError(f"--point-fraction {point_fraction}: give a share between 0 and 1")
    if not lr > 0:
        raise DessamError(f"--lr {lr}: give a positive learning rate")
    if init is not None and not Path(init).is_file():
        raise DessamError(f"{init}: --init file not found; give a file written by pretrain-teacher")


def pretrain_teacher(
    out_path: str | Path,
    minutes: Optional[float] = None,
    steps: int = 4000,
    seed: int = 0,
    device: str = "cpu",
    image_size: int = DEFAULT_IMAGE_SIZE,
    batch_size: int = 2,
    max_prompts: int = 24,
    point_fraction: float = POINT_FRACTION,
    lr: float = 2e-3,
    weight_decay: float = 0.01,
    warmup: int = 100,
    arch: Optional[dict] = None,
    eval_scenes: int = 24,
    save_every: int = 250,
    threads: Optional[int] = None,
    init: Optional[str | Path] = None,
    progress: bool = True,
) -> dict:
    """Train the default teacher for `steps` steps (or until `minutes` have passed, if sooner) and
    write it to `out_path`. Returns the measured numbers (also stored in the file under "train").

    `init`: a default-teacher file to start from (its architecture is kept) instead of random weights,
    for a second stage with other prompts or a lower learning rate."""
    _check_options(steps, minutes, point_fraction, lr, init)
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if init is not None:
        from ..models.default_teacher import load_default_teacher, teacher_architecture

        arch = {**teacher_architecture(init), "image_size": int(image_size)}
        sam = load_default_teacher(image_size, init).to(device)
    else:
        arch = {**DEFAULT_ARCH, **(arch or {}), "image_size": int(image_size)}
        sam = build_default_architecture(image_size, arch).to(device)
    sam.train()
    params = [p for p in sam.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    start = time.monotonic()
    deadline = start + 60.0 * minutes if minutes else None
    running_loss = running_iou = None
    losses = []
    bar = tqdm(range(steps), desc="pretrain teacher", disable=not progress)
    step = 0
    for step in bar:
        if deadline is not None and time.monotonic() > deadline:
            break
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, steps, lr, warmup)
        images, prompts = sample_batch(rng, batch_size, image_size, max_prompts, point_fraction)
        embeddings = sam.image_encoder(sam.preprocess(images.to(device)))
        loss, ious = 0.0, []
        for index, prompt in enumerate(prompts):
            image_loss, image_ious = prompt_losses(sam, embeddings[index : index + 1], prompt.to(device), image_size)
            loss = loss + image_loss / len(prompts)
            ious.append(image_ious)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        value, iou = float(loss.detach()), float(torch.cat(ious).float().mean()) if sum(map(len, ious)) else 0.0
        losses.append(value)
        running_loss = value if running_loss is None else 0.98 * running_loss + 0.02 * value
        running_iou = iou if running_iou is None else 0.98 * running_iou + 0.02 * iou
        bar.set_postfix(loss=f"{running_loss:.3f}", iou=f"{running_iou:.3f}")
        if save_every and (step + 1) % save_every == 0 and step + 1 < steps:
            _save(out_path, sam, arch, {"steps_done": step + 1, "seed": seed, "steps": steps})
    else:
        step = steps
    bar.close()
    wall = time.monotonic() - start
    sam.eval()
    held_out = evaluate_box_prompt_iou(sam, held_out_anything_scenes(eval_scenes, seed, image_size)) if eval_scenes else None
    result = {
        "steps_done": int(step),
        "steps": int(steps),
        "seed": int(seed),
        "batch_size": int(batch_size),
        "max_prompts": int(max_prompts),
        "point_fraction": float(point_fraction),
        "init": None if init is None else Path(init).name,
        "lr": float(lr),
        "train_seconds": round(wall, 1),
        "first_loss": float(np.mean(losses[:20])) if losses else None,
        "final_loss": float(np.mean(losses[-50:])) if losses else None,
        "final_train_iou": running_iou,
        "held_out_anything_iou": held_out,
        "held_out_scenes": int(eval_scenes),
    }
    _save(out_path, sam, arch, result)
    return result


def _save(out_path: str | Path, sam: Sam, arch: dict, info: dict) -> None:
    payload = teacher_file(sam, arch, train=dict(info))
    with atomic_path(out_path) as tmp:
        torch.save(payload, tmp)
