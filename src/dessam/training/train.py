"""Box-supervised DES-SAM training.

One call of `train()`:
1. reads the COCO file (boxes only are enough; masks given on any annotations supervise the
   proposals matched to them, see `dessam.training.mask_targets`) and checks it;
2. builds SAM and the DES-SAM model; computes each training image's SAM embedding once and caches
   it (float16, keyed by image content and encoder weights), so no epoch runs the encoder;
3. runs the official schedule (SGD, linear warm-up, step decay), logging every iteration to
   `RUN/log.csv`, and writes `RUN/model.pt` plus resumable checkpoints atomically.

Resuming (`resume=True`) continues from `RUN/checkpoints/last.pt` and, on a CPU, reproduces an
uninterrupted run exactly: the data order depends only on (seed, epoch) and the checkpoint holds
the random-number state.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from ..atomic import remove_stale_temporaries, write_text_atomic
from ..config import Config, save_config
from ..data.coco import load_coco
from ..devices import resolve_device
from ..errors import DessamError
from ..models.dessam import DESSAM, LOSS_NAMES
from ..models.model_file import read_checkpoint, sam_identity, save_checkpoint, save_model_file
from ..models.sam import build_sam, recognise_variant
from ..scale import ModelScale, check_pixel_size
from . import distributed
from .batches import batch_masks, batch_tensors, encode_training_set
from .cache import EmbeddingCache
from .init import Start, starting_weights
from .loss_log import LossLog
from .mask_targets import supervision_counts
from .validation_loss import write_validation_losses


def build_model(config: Config, device: torch.device):
    """The DES-SAM model for `config` (trainable parts freshly initialised) and its SAM identity."""
    model_config = config.model
    sam_name, checkpoint = model_config.sam, model_config.sam_checkpoint
    sam = build_sam(sam_name, checkpoint, model_config.image_size)
    if checkpoint is None and Path(str(sam_name)).suffix in (".pth", ".pt"):
        sam_name, checkpoint = recognise_variant(sam_name), sam_name
        model_config.sam, model_config.sam_checkpoint = sam_name, str(checkpoint)
    model_config.image_size = int(sam.image_encoder.img_size)
    identity = sam_identity(sam_name, checkpoint, sam)
    torch.manual_seed(config.train.seed)
    model = DESSAM(sam, config).to(device)
    return model, identity


def training_factor(config: Config) -> Optional[float]:
    """How much training images are resampled: None with `fit` scaling (each fitted to the input),
    else the training images' pixel size over the model's (1: native resolution)."""
    if config.model.input_scaling == "fit":
        return None
    check_pixel_size(config.train.pixel_size_um, "train.pixel_size_um")
    check_pixel_size(config.model.pixel_size_um, "model.pixel_size_um")
    if config.train.pixel_size_um and config.model.pixel_size_um:
        return config.train.pixel_size_um / config.model.pixel_size_um
    return 1.0


def model_scale(config: Config, items: list, factor: Optional[float]) -> ModelScale:
    """The scale the model is trained at, as recorded in model.pt."""
    if factor is None:
        input_scale = float(np.median([item.resized_hw[0] / item.record.height for item in items]))
    else:
        input_scale = float(factor)
    pixel_size = config.train.pixel_size_um / input_scale if config.train.pixel_size_um else None
    if pixel_size is None and factor is not None:
        pixel_size = config.model.pixel_size_um  # fixed scaling at a stated pixel size
    boxes = np.concatenate([item.boxes.numpy() for item in items])
    sides = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    return ModelScale(config.model.input_scaling, input_scale, pixel_size, float(np.median(sides)))


def learning_rate(config: Config, iteration: int, epoch: int, world_size: int = 1) -> float:
    """Official schedule: linear warm-up, then x gamma at each step epoch; lr scaled to the batch."""
    train = config.train
    base = train.lr * train.batch_size * world_size / train.lr_reference_batch
    factor = train.lr_gamma ** sum(epoch >= step for step in train.lr_steps)
    if iteration < train.warmup_iters:
        alpha = iteration / max(train.warmup_iters, 1)
        factor *= train.warmup_ratio * (1 - alpha) + alpha
    return base * factor


def make_optimizer(config: Config, parameters: list, lr: float) -> torch.optim.Optimizer:
    train = config.train
    if train.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=train.momentum, weight_decay=train.weight_decay)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=train.weight_decay)
    raise DessamError(f"train.optimizer: unknown '{train.optimizer}'; use sgd or adamw")


def epoch_order(seed: int, epoch: int, count: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(count)


@dataclass
class TrainResult:
    model_path: Path
    iterations: int
    epochs_done: int
    skipped_nonfinite: int
    clipped_boxes: int
    dropped_boxes: int
    encoder_runs: int
    mask_annotations: int = 0    # annotations supervised with their given masks
    box_annotations: int = 0     # ... and with their boxes (the teacher's pseudo-masks)
    stopped: bool = False        # `on_iteration` asked to stop before the schedule's end
    start: str = ""              # where the trained weights started from


def train(config: Config, train_json, images_dir, out_dir, val_json=None, resume: bool = False,
          progress: bool = True, on_iteration: Optional[Callable[[int, int, float], bool]] = None) -> TrainResult:
    """Train on `train_json` into `out_dir` (see the module docstring).

    on_iteration(iteration, total, loss): called after every iteration (single process; a viewer's
    loss readout); when it returns True, training stops there and saves what it has, as at the
    end of the schedule (model.pt, last.pt; `resume` goes on from it).
    """
    out_dir = Path(out_dir)
    dist = distributed.current()
    device = resolve_device(config.train.device) if not dist.enabled else dist.device
    dataset = load_coco(train_json, images_dir)
    annotated = [record for record in dataset.images if len(record.boxes)]  # as the official filter_empty_gt
    if not annotated:
        raise DessamError(f"{train_json}: the dataset has no images with boxes; add annotations")
    if dist.is_main:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DessamError(f"{out_dir}: cannot create the run folder ({exc.strerror}); choose another --out") from None
        if not os.access(out_dir, os.W_OK):
            raise DessamError(f"{out_dir}: the run folder is not writable; choose another --out")
    checkpoint_dir = out_dir / "checkpoints"
    last_path = checkpoint_dir / "last.pt"
    state = None
    if resume:
        if dist.is_main:
            remove_stale_temporaries(out_dir, checkpoint_dir)
        if not last_path.is_file():
            raise DessamError(f"{last_path}: nothing to resume from; run without --resume")
        state = read_checkpoint(last_path)

    model, identity = build_model(config, device)
    if state is not None and state["sam"]["sha256"] != identity["sha256"]:
        raise DessamError(f"{last_path}: this run was trained on other SAM weights ({state['sam']['name']}); "
                          f"resume with the same --sam and --sam-checkpoint")
    start = starting_weights(model, identity, config.train.init) if state is None else Start(last_path, "resumed")
    encoder_runs = _count_calls(model.sam.image_encoder)
    cache_dir = Path(config.train.cache_dir) if config.train.cache_dir else out_dir / "cache"
    cache = EmbeddingCache(cache_dir, encoder_key=f"{identity['sha256']}:{model.image_size}")
    records = distributed.shard(annotated, dist)
    factor = training_factor(config)
    items = encode_training_set(model, records, cache, device, progress and dist.is_main, factor, given_masks=True)
    if not items:
        raise DessamError(f"{train_json}: no image keeps a box at the model's scale; check the boxes and --pixel-size")
    scale = model_scale(config, items, factor)
    mask_annotations, box_annotations = supervision_counts(annotated)
    parameters = model.trainable_parameters()
    optimizer = make_optimizer(config, parameters, learning_rate(config, 0, 0, dist.world_size))
    trainer = distributed.wrap(model, dist)
    epoch, start_batch, iteration, nonfinite_run = 0, 0, 0, 0
    if state is not None:
        model.load_trainable_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        epoch, start_batch, iteration = state["epoch"], state["batch"], state["iteration"]
        nonfinite_run = state["nonfinite_run"]
        torch.set_rng_state(state["torch_rng"])
    if dist.is_main:
        save_config(config, out_dir / "config.yaml")
    log = LossLog(out_dir / "log.csv", keep_until=iteration if state is not None else None) if dist.is_main else None

    batch_size = config.train.batch_size
    batches_per_epoch = math.ceil(len(items) / batch_size)
    total = config.train.epochs * batches_per_epoch
    if config.train.max_iters is not None:
        total = min(total, config.train.max_iters)
    skipped_total = 0
    recent = []
    stopped = False
    bar = tqdm(total=total, initial=iteration, desc="Training", unit="it", disable=not (progress and dist.is_main))
    model.train()
    try:
        while epoch < config.train.epochs and iteration < total:
            order = epoch_order(config.train.seed, epoch, len(items))
            for batch in range(start_batch, batches_per_epoch):
                if iteration >= total:
                    break
                chosen = [items[i] for i in order[batch * batch_size:(batch + 1) * batch_size]]
                lr = learning_rate(config, iteration, epoch, dist.world_size)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                embeddings, rgb, normalised, boxes, sizes = batch_tensors(model, chosen, cache, device)
                losses = trainer(embeddings, rgb, normalised, boxes, sizes, gt_masks=batch_masks(chosen, device))
                total_loss = model.weighted_total(losses)
                finite = distributed.all_finite(dist, total_loss)  # every rank takes part, every step
                optimizer.zero_grad(set_to_none=True)
                if finite:
                    total_loss.backward()
                    if config.train.grad_clip:
                        torch.nn.utils.clip_grad_norm_(parameters, config.train.grad_clip)
                    optimizer.step()
                    nonfinite_run = 0
                else:
                    nonfinite_run += 1
                    skipped_total += 1
                iteration += 1
                row = {"epoch": epoch, "iteration": iteration, "lr": f"{lr:.6g}", "total": f"{total_loss.item():.6g}",
                       "skipped_nonfinite": int(not finite)}
                row.update({name: f"{losses[name].item():.6g}" for name in LOSS_NAMES})
                if log is not None:
                    log.write(row)
                if finite:
                    recent = (recent + [total_loss.item()])[-20:]
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(recent):.4f}" if recent else "nan", lr=f"{lr:.2g}")
                if nonfinite_run >= config.train.max_nonfinite:
                    kept = (f"the last good checkpoint {last_path} is intact" if last_path.is_file()
                            else "no checkpoint was written yet")
                    raise DessamError(
                        f"training stopped: {nonfinite_run} non-finite losses in a row at iteration {iteration}; "
                        f"{kept}; lower train.lr or set train.grad_clip"
                    )
                if on_iteration is not None:
                    stopped = bool(on_iteration(iteration, total, total_loss.item()))
                if stopped or (iteration >= total and batch + 1 < batches_per_epoch):
                    start_batch = batch + 1
                    break
            else:
                epoch, start_batch = epoch + 1, 0
                if dist.is_main:
                    state_now = model.trainable_state_dict()
                    save_checkpoint(checkpoint_dir / f"epoch_{epoch:03d}.pt", state_now, optimizer, config, identity,
                                    epoch, 0, iteration, nonfinite_run)
                    save_checkpoint(last_path, state_now, optimizer, config, identity, epoch, 0, iteration, nonfinite_run)
                    save_model_file(out_dir / "model.pt", state_now, config, identity, epoch, iteration, scale)
                continue
            break
        distributed.write_rank_digest(model.trainable_state_dict(), dist)
        if dist.is_main:
            state_now = model.trainable_state_dict()
            save_checkpoint(last_path, state_now, optimizer, config, identity, epoch, start_batch, iteration, nonfinite_run)
            save_model_file(out_dir / "model.pt", state_now, config, identity, epoch, iteration, scale)
            write_text_atomic(out_dir / "data_report.txt",
                              f"images: {len(dataset.images)}\nclipped boxes: {dataset.clipped_boxes}\n"
                              f"dropped zero-size boxes: {dataset.dropped_boxes}\n"
                              f"annotations supervised with masks: {mask_annotations}\n"
                              f"annotations supervised with boxes: {box_annotations}\n"
                              f"skipped non-finite iterations: {skipped_total}\n")
        if val_json is not None and dist.is_main:
            write_validation_losses(model, config, val_json, images_dir, cache, device, out_dir / "val.csv", progress)
    finally:
        bar.close()
        if log is not None:
            log.close()
    return TrainResult(out_dir / "model.pt", iteration, epoch, skipped_total, dataset.clipped_boxes,
                       dataset.dropped_boxes, encoder_runs(), mask_annotations, box_annotations, stopped,
                       start.note)


def _count_calls(module: torch.nn.Module):
    """Count forward calls of `module`; returns a function giving the count so far."""
    count = [0]

    def hook(*_):
        count[0] += 1

    module.register_forward_hook(hook)
    return lambda: count[0]
