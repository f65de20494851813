"""Pre-train the bundled default teacher on generic synthetic scenes, and measure it.

The teacher learns what SAM learns from SA-1B, on a small scale: given an image and a box around
an object, draw that object's mask. Every step draws fresh "anything" scenes
(`dessam.data.anything`), prompts the model with a jittered box around each of (up to
`max_prompts`) objects per scene -- box noise of 10 % of the box side, at most 20 px, as in SAM's
training -- and trains the encoder, prompt encoder and mask decoder on the first mask token (the
single-mask output that dessam uses for box prompts): BCE + Dice on the low-resolution logits
against the area-downsampled ground truth, plus MSE of the IoU head against the IoU it achieved.
The result depends on the seed and the number of steps only, never on wall-clock time (except when
`minutes` cuts a run short).
"""

from __future__ import annotations

import math
import time
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
from ..models.default_teacher import DEFAULT_ARCH, DEFAULT_IMAGE_SIZE, build_default_architecture, teacher_file

BOX_NOISE = 0.1  # of the box side
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


def sample_batch(rng: np.random.Generator, batch_size: int, size: int, max_prompts: int):
    """Images (B, 3, S, S) float 0-255 and per image (jittered boxes (N, 4), masks (N, S, S) bool)."""
    images, prompts = [], []
    while len(images) < batch_size:
        image, labels = make_anything_scene(rng, size)
        ids, boxes = instance_boxes(labels)
        if len(ids) == 0:
            continue
        pick = rng.permutation(len(ids))[:max_prompts]
        masks = labels[None] == ids[pick, None, None]
        images.append(torch.from_numpy(image).permute(2, 0, 1).float())
        prompts.append((torch.from_numpy(jitter_boxes(boxes[pick], rng, size)), torch.from_numpy(masks)))
    return torch.stack(images), prompts


def decode_boxes(sam: Sam, embedding: torch.Tensor, boxes: torch.Tensor):
    """Low-res logits (N, 1, 4h, 4w) and IoU predictions (N, 1) of the first mask token for one image."""
    sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
    return sam.mask_decoder(
        image_embeddings=embedding,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )


def box_regions(boxes: torch.Tensor, shape: tuple, image_size: int, margin: float = 8.0) -> torch.Tensor:
    """(N, 1, h, w) bool: the low-res pixels inside each box grown by `margin` image pixels."""
    scale = shape[-1] / image_size
    centres = (torch.arange(shape[-1], device=boxes.device) + 0.5) / scale
    x1, y1, x2, y2 = [(boxes[:, i] + (margin if i > 1 else -margin))[:, None] for i in range(4)]
    inside_x = (centres[None] >= x1) & (centres[None] <= x2)
    inside_y = (centres[None] >= y1) & (centres[None] <= y2)
    return (inside_y[:, :, None] & inside_x[:, None, :])[:, None]


def mask_losses(logits: torch.Tensor, iou_pred: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor,
                image_size: int):
    """(loss, achieved IoUs) of low-res logits (N, 1, h, w) against masks (N, H, W).

    BCE is averaged separately near the prompt box and away from it (the two halves weigh the same),
    so that small objects are not drowned by the background; plus Dice, plus MSE of the IoU head.
    """
    target = F.adaptive_avg_pool2d(masks[:, None].float(), logits.shape[-2:])
    near = box_regions(boxes, logits.shape, image_size).float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    bce_near = (bce * near).flatten(1).sum(1) / near.flatten(1).sum(1).clamp(min=1)
    bce_far = (bce * (1 - near)).flatten(1).sum(1) / (1 - near).flatten(1).sum(1).clamp(min=1)
    prob = logits.sigmoid().flatten(1)
    flat = target.flatten(1)
    dice = 1 - (2 * (prob * flat).sum(1) + 1) / (prob.sum(1) + flat.sum(1) + 1)
    with torch.no_grad():
        pred, truth = (logits > 0).flatten(1), (flat > 0.5)
        iou = (pred & truth).sum(1) / (pred | truth).sum(1).clamp(min=1)
    iou_loss = F.mse_loss(iou_pred[:, 0], iou.float())
    return (bce_near + bce_far + dice).mean() + iou_loss, iou


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


def pretrain_teacher(
    out_path: str | Path,
    minutes: Optional[float] = None,
    steps: int = 3000,
    seed: int = 0,
    device: str = "cpu",
    image_size: int = DEFAULT_IMAGE_SIZE,
    batch_size: int = 2,
    max_prompts: int = 24,
    lr: float = 2e-3,
    weight_decay: float = 0.01,
    warmup: int = 100,
    arch: Optional[dict] = None,
    eval_scenes: int = 24,
    save_every: int = 250,
    threads: Optional[int] = None,
    progress: bool = True,
) -> dict:
    """Train the default teacher for `steps` steps (or until `minutes` have passed, if sooner) and
    write it to `out_path`. Returns the measured numbers (also stored in the file under "train")."""
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
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
        images, prompts = sample_batch(rng, batch_size, image_size, max_prompts)
        embeddings = sam.image_encoder(sam.preprocess(images.to(device)))
        loss, ious = 0.0, []
        for index, (boxes, masks) in enumerate(prompts):
            logits, iou_pred = decode_boxes(sam, embeddings[index : index + 1], boxes.to(device))
            image_loss, image_ious = mask_losses(logits, iou_pred, masks.to(device), boxes.to(device), image_size)
            loss = loss + image_loss / len(prompts)
            ious.append(image_ious)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        value, iou = float(loss.detach()), float(torch.cat(ious).float().mean())
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
