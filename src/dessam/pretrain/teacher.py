"""Pre-train the default teacher on a corpus: boxes in, the nucleus inside each box out.

The teacher learns what SAM learns from SA-1B, for nuclei: given an image and a box around a
nucleus, draw that nucleus's mask. Every step draws `batch_size` crops from the corpus's datasets
(each in proportion to its weight; `dessam.data.corpus`), each rescaled 0.5-2 x, turned and
recoloured (`dessam.data.augment`), and prompts the model with up to `max_prompts` nuclei per
crop. Prompts are the ground-truth boxes jittered the way a detector's boxes err (`jitter_boxes`).
Each box is decoded on a window of the embedding around it, as prediction decodes it, with a
margin drawn per crop so that the model also sees the larger windows that prompts sharing a
decoder call get. Losses, on the logits of each window (one per input pixel): binary cross-entropy
near the box and away from it (weighing the same, so that small nuclei are not drowned by the
background) plus Dice, and the mean squared error of SAM's IoU head against the IoU it achieved.

A run writes into its folder: `teacher.pt` (a default-teacher file, loadable with
`--sam default --sam-checkpoint`), `teacher.md` (its model card), `log.csv` (loss and IoU per step,
the validation IoU of every dataset at each evaluation), and `checkpoints/last.pt` to resume. The
crops of step k depend only on (seed, k), so a resumed run is the run that was not interrupted.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from tqdm.auto import tqdm

from ..atomic import atomic_path, remove_stale_temporaries
from ..data.augment import random_view
from ..data.corpus import Corpus, LoadedDataset, load_dataset, read_manifest, synthetic_scene
from ..errors import DessamError
from ..models.checkpoints import safe_torch_load, save_torch_atomic
from ..models.default_teacher import build_default_architecture, full_arch, teacher_file
from ..models.box_views import boxes_in_views, cut_views
from ..models.prompted_decoder import PromptedMaskDecoder, prompt_windows

MIN_PROMPT_AREA = 16    # pixels of a nucleus visible in a crop, for it to be prompted
ARCH_SIZES = {          # encoders to choose from (`--arch`); all keep SAM's decoder at width 64
    "small": {"widths": [16, 32, 64, 128], "depths": [1, 2, 2, 2]},
    "medium": {"widths": [24, 48, 96, 160], "depths": [1, 2, 3, 3]},
    "conv": {"encoder": "conv", "local_margin": 4},  # the first bundled teacher's stride-8 encoder (3.7 MB), for comparison
}


@dataclass
class Recipe:
    """Everything a teacher pre-training run depends on, besides the corpus."""

    steps: int = 6000
    batch_size: int = 8
    crop: int = 192
    max_prompts: int = 12
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 200
    seed: int = 0
    arch: str = "small"
    margins: tuple = (2, 6)        # tokens of window margin, drawn per crop
    box_noise: float = 0.08        # std of each box edge's error, as a share of the box side
    box_noise_wide: float = 0.2    # ... for the share `wide_errors` of boxes that a detector gets badly wrong
    wide_errors: float = 0.15
    nucleus_px: Optional[float] = None  # rescale around the size that makes the median nucleus this wide (None: native)
    eval_every: int = 500
    val_limit: int = 24            # validation images per dataset (the first ones, in name order)
    views_from: Optional[str] = None  # a teacher file or bundled name: train per-box views on top of it
    view_size: int = 64            # pixels across each box's view (views only)
    view_context: float = 2.0      # each view spans this many times its box's longer side (views only)

    def __post_init__(self):
        if self.arch not in ARCH_SIZES:
            raise DessamError(f"--arch {self.arch}: choose {' or '.join(ARCH_SIZES)}")
        for name in ("steps", "batch_size", "crop", "max_prompts", "eval_every"):
            if int(getattr(self, name)) < (0 if name == "steps" else 1):
                wanted = "0 or more" if name == "steps" else "a positive number"
                raise DessamError(f"--{name.replace('_', '-')} {getattr(self, name)}: give {wanted}")
        if self.crop % 16:
            raise DessamError(f"--crop {self.crop}: give a multiple of 16")
        if not self.lr > 0:
            raise DessamError(f"--lr {self.lr}: give a positive learning rate")
        if self.views_from is not None and (self.view_size % 16 or self.view_size < 16):
            raise DessamError(f"--view-size {self.view_size}: give a multiple of 16")
        if self.views_from is not None and self.arch == "conv":
            raise DessamError("--views-from: the view encoder is a U-Net; choose --arch small or medium")
        self.margins = tuple(int(m) for m in self.margins)


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


def views_base(recipe: Recipe) -> tuple:
    """(arch, state dict) of the teacher that a view teacher is trained on top of: its whole-image
    encoder stays (frozen; the detector reads its embedding), its decoder and encoder start the views."""
    from ..models.default_teacher import teacher_architecture

    path = views_base_path(recipe)
    if not path.is_file():
        raise DessamError(f"--views-from {path}: no such teacher file; give a bundled name or a teacher.pt")
    arch = teacher_architecture(path)
    if arch["encoder"] != "unet":
        raise DessamError(f"--views-from {path}: views go on top of a U-Net teacher (stride 4), not '{arch['encoder']}'")
    arch.pop("stride")
    size = ARCH_SIZES[recipe.arch]
    arch["views"] = {"size": recipe.view_size, "context": recipe.view_context, "widths": size["widths"],
                     "depths": size["depths"]}
    return arch, safe_torch_load(path)["state_dict"]


def views_base_path(recipe: Recipe) -> Path:
    """The teacher file `--views-from` names."""
    from ..models.default_teacher import is_default_teacher, teacher_path

    return teacher_path(recipe.views_from) if is_default_teacher(recipe.views_from) else Path(recipe.views_from)


def views_base_sha256(recipe: Recipe) -> str:
    from ..models.checkpoints import file_sha256

    return file_sha256(views_base_path(recipe))


def start_views(sam: Sam, base_state: dict) -> None:
    """Load the base teacher into a view teacher: every module as it was, and the view encoder from the
    whole-image encoder where their shapes agree; freeze the whole-image encoder."""
    state = dict(base_state)
    own = sam.state_dict()
    for key, value in base_state.items():
        if key.startswith("image_encoder."):
            twin = "view_encoder." + key[len("image_encoder."):]
            if twin in own and own[twin].shape == value.shape:
                state[twin] = value
    sam.load_state_dict(state, strict=False)
    for parameter in sam.image_encoder.parameters():
        parameter.requires_grad_(False)


def normalise(sam: Sam, images: torch.Tensor) -> torch.Tensor:
    """SAM's pixel normalisation without its padding to the input size (`Sam.preprocess` pads)."""
    return (images - sam.pixel_mean) / sam.pixel_std


def learning_rate(step: int, recipe: Recipe) -> float:
    """Linear warm-up, then a cosine decay to zero at the last step."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(recipe.steps - recipe.warmup, 1)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


# ----- validation ----------------------------------------------------------------------------
def instance_iou(crop: np.ndarray, origin: tuple, labels: np.ndarray, identity: int, area: int) -> float:
    """IoU of a mask (a boolean crop at `origin` of the image) with nucleus `identity` of `labels`."""
    rows = slice(origin[0], origin[0] + crop.shape[0])
    cols = slice(origin[1], origin[1] + crop.shape[1])
    inter = int((crop & (labels[rows, cols] == identity)).sum()) if crop.size else 0
    return inter / max(int(crop.sum()) + area - inter, 1)


def box_prompt_iou(predictor, samples: list) -> float:
    """Mean mask IoU over every nucleus of `samples`, each prompted with its exact box through the
    prediction pipeline (`dessam label`'s engine: the image at its own scale, in windows of the
    model's input size when larger, each box decoded as prediction decodes it)."""
    from ..inference.box_masks import box_masks

    ious = []
    for sample in samples:
        ids, boxes = nucleus_boxes(sample.labels, min_area=1)
        if not len(ids):
            continue
        areas = np.bincount(sample.labels.ravel())
        found = box_masks(predictor, sample.image, boxes, use_token=False).instances
        ious += [instance_iou(found.crops[k], tuple(found.origins[k]), sample.labels, int(i), int(areas[i]))
                 for k, i in enumerate(ids)]
    return float(np.mean(ious)) if ious else float("nan")


def validate(sam: Sam, datasets: list, recipe: Recipe) -> dict:
    """{dataset name: box-prompt IoU on its held-out images} (the model is left in eval mode)."""
    from ..inference.loading import teacher_predictor

    sam.eval()
    trainable = [p for p in sam.parameters() if p.requires_grad]
    try:
        with torch.no_grad():
            predictor = teacher_predictor(sam, {"name": "default", "checkpoint": None, "sha256": ""},
                                          full_arch(ARCH_SIZES[recipe.arch])["local_margin"])
            return {d.spec.name: box_prompt_iou(predictor, d.val[:recipe.val_limit]) for d in datasets if d.val}
    finally:  # the predictor freezes the model it wraps
        for parameter in trainable:
            parameter.requires_grad_(True)


# ----- the run -------------------------------------------------------------------------------
@dataclass
class PretrainResult:
    teacher_path: Path
    card_path: Path
    steps_done: int
    validation: dict = field(default_factory=dict)


def pretrain_teacher(corpus_path, out_dir, recipe: Optional[Recipe] = None, resume: bool = False, device: str = "cpu",
                     threads: Optional[int] = None, command: str = "", progress: bool = True) -> PretrainResult:
    """Pre-train the default teacher on the corpus at `corpus_path` into `out_dir` (see the module
    docstring); `resume` continues from `out_dir/checkpoints/last.pt` with its recipe."""
    out_dir = Path(out_dir)
    last = out_dir / "checkpoints" / "last.pt"
    state = None
    if resume:
        if not last.is_file():
            raise DessamError(f"{last}: nothing to resume from; run without --resume")
        remove_stale_temporaries(out_dir, last.parent)
        state = safe_torch_load(last)
        recipe = Recipe(**{**state["recipe"], "margins": tuple(state["recipe"]["margins"])})
    recipe = recipe or Recipe()
    corpus = read_manifest(corpus_path)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DessamError(f"{out_dir}: cannot create the run folder ({exc.strerror}); choose another --out") from None
    if threads:
        torch.set_num_threads(int(threads))
    datasets = [load_dataset(spec, progress) for spec in corpus.datasets if "teacher" in spec.use]
    if not datasets:
        raise DessamError(f"{corpus.path}: no dataset is for the teacher; give one with use: [teacher]")
    weights = np.array([d.spec.weight for d in datasets], np.float64)
    weights /= weights.sum()

    torch.manual_seed(recipe.seed)
    if recipe.views_from is not None:
        base_arch, base_state = views_base(recipe)
        arch = full_arch(base_arch)
        sam = build_default_architecture(arch["image_size"], arch)
        start_views(sam, base_state)
        sam = sam.to(device)
    else:
        arch = full_arch(ARCH_SIZES[recipe.arch])
        sam = build_default_architecture(arch["image_size"], arch).to(device)
    if recipe.crop > arch["image_size"]:
        raise DessamError(f"--crop {recipe.crop}: at most the model's input size, {arch['image_size']}")
    decoder = PromptedMaskDecoder(sam, prompt_token=False)
    params = [p for p in sam.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    step, history = 0, []
    if state is not None:
        sam.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        step, history = int(state["step"]), list(state["history"])
    log = _open_log(out_dir / "log.csv", [d.spec.name for d in datasets if d.val], keep_until=step if state else None)
    started = time.monotonic()
    bar = tqdm(total=recipe.steps, initial=step, desc="pretrain teacher", unit="step", disable=not progress)
    running = None
    try:
        sam.train()
        while step < recipe.steps:
            rng = np.random.default_rng([recipe.seed, step])
            images, labels, prompts, _ = draw_crops(rng, datasets, weights, recipe)
            margin = int(rng.integers(recipe.margins[0], recipe.margins[1] + 1))
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, recipe)
            if decoder.views is not None:
                total, iou = view_losses(decoder, normalise(sam, images.to(device)), labels, prompts)
                count, ious = len(iou), [iou]
            else:
                embeddings = sam.image_encoder(normalise(sam, images.to(device)))  # the crops alone, unpadded
                total, count, ious = 0.0, 0, []
                free = decoder.grid - embeddings.shape[-1]  # where a crop may sit in the input frame
                for index, (crop_labels, prompted) in enumerate(zip(labels, prompts)):
                    offset = (int(rng.integers(free + 1)), int(rng.integers(free + 1)))
                    loss, iou = crop_losses(decoder, embeddings[index:index + 1], crop_labels, prompted, margin, offset)
                    total, count = total + loss, count + len(prompted.ids)
                    ious.append(iou)
            loss = total / max(count, 1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            step += 1
            value, iou = float(loss.detach()), float(torch.cat(ious).mean())
            running = (value, iou) if running is None else (0.98 * running[0] + 0.02 * value, 0.98 * running[1] + 0.02 * iou)
            row = {"step": step, "lr": f"{learning_rate(step - 1, recipe):.6g}", "loss": f"{value:.5f}",
                   "train_iou": f"{iou:.4f}"}
            if step % recipe.eval_every == 0 or step == recipe.steps:
                scores = validate(sam, datasets, recipe)
                sam.train()
                history.append({"step": step, **{k: round(v, 4) for k, v in scores.items()}})
                row.update({f"val_{k}": f"{v:.4f}" for k, v in scores.items()})
                _save(out_dir, sam, arch, recipe, corpus, datasets, history, step, optimizer, command, started)
            log.write(row)
            bar.update(1)
            bar.set_postfix(loss=f"{running[0]:.3f}", iou=f"{running[1]:.3f}")
    finally:
        bar.close()
        log.close()
    if not history or history[-1]["step"] != step:  # 0 steps, or a finished run resumed
        scores = validate(sam, datasets, recipe)
        history.append({"step": step, **{k: round(v, 4) for k, v in scores.items()}})
        _save(out_dir, sam, arch, recipe, corpus, datasets, history, step, optimizer, command, started)
    return PretrainResult(out_dir / "teacher.pt", out_dir / "teacher.md", step,
                          {k: v for k, v in history[-1].items() if k != "step"})


def _open_log(path: Path, val_names: list, keep_until: Optional[int]):
    from ..training.csv_log import CsvLog

    columns = ["step", "lr", "loss", "train_iou"] + [f"val_{name}" for name in val_names]
    return CsvLog(path, columns, key="step", keep_until=keep_until)


def _save(out_dir: Path, sam: Sam, arch: dict, recipe: Recipe, corpus: Corpus, datasets: list, history: list,
          step: int, optimizer, command: str, started: float) -> None:
    """Write teacher.pt, its model card and the resumable checkpoint, each atomically."""
    from ..licences import from_data, inherited
    from ..models.weights_terms import teacher_terms
    from ..training.model_card import teacher_card

    info = {"recipe": asdict(recipe), "steps_done": step, "validation": history[-1],
            "datasets": [{"name": d.spec.name, "licence": d.spec.licence, **d.counts()} for d in datasets]}
    terms = from_data({d.spec.name: d.spec.licence for d in datasets}, "the teacher")
    if recipe.views_from is not None:  # models trained on that teacher keep their detector on this one
        info["views_from"] = {"name": Path(recipe.views_from).name, "sha256": views_base_sha256(recipe)}
        terms = inherited(terms, teacher_terms(views_base_path(recipe)))  # its whole-image encoder is that teacher's
    save_torch_atomic(teacher_file(sam, arch, train=json.loads(json.dumps(info)), licence=terms.to_dict()),
                      out_dir / "teacher.pt")
    seconds = time.monotonic() - started
    card = teacher_card(corpus, datasets, recipe, history, step, arch, sam, command, seconds, terms,
                        info.get("views_from", {}).get("sha256", ""))
    with atomic_path(out_dir / "teacher.md") as tmp:
        tmp.write_text(card, encoding="utf-8")
    state = {"recipe": {**asdict(recipe), "margins": list(recipe.margins)}, "step": step, "history": history,
             "state_dict": {k: v.detach().cpu().clone() for k, v in sam.state_dict().items()},
             "optimizer": optimizer.state_dict()}
    save_torch_atomic(state, out_dir / "checkpoints" / "last.pt")


def read_history(log_csv: Path) -> list:
    """The rows of a pre-training log (for plots and reports)."""
    with open(log_csv, newline="") as handle:
        return list(csv.DictReader(handle))
