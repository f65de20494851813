"""Box-supervised DES-SAM training.

`train()` runs a `Trainer` through its steps:
1. `prepare`: reads the COCO file (boxes only are enough; masks given on any annotations supervise
   the proposals matched to them, see `dessam.training.mask_targets`), checks it and the run folder;
2. `build`: builds SAM and the DES-SAM model (`dessam.models.build.build_dessam`); computes each
   training image's SAM embedding once and caches it (float16, keyed by image content and encoder
   weights), so no epoch runs the encoder;
3. `run_schedule`: the official schedule (SGD, linear warm-up, step decay), one `step` per batch,
   every iteration logged to `RUN/log.csv`, resumable checkpoints after each epoch;
4. `finish`: `RUN/model.pt` and the last checkpoint, written atomically, and the validation losses.

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
from ..geometry.scale import ModelScale, check_pixel_size
from ..licences import Terms
from ..models.build import build_dessam
from ..models.dessam import LOSS_NAMES
from ..models.model_file import read_checkpoint, sam_identity, save_checkpoint, save_model_file
from ..models.sam import build_sam, recognise_variant
from ..models.weights_terms import sam_terms, training_terms
from . import distributed
from .batches import batch_masks, batch_tensors, encode_training_set, return_freed_memory
from .cache import EmbeddingCache
from .init import Start, starting_weights
from .loss_log import LossLog
from .mask_targets import supervision_counts
from .prepared import prepare_training_set
from .schedule import epoch_order, learning_rate, make_optimizer, stretched_schedule
from .validation_loss import write_validation_losses


def build_model(config: Config, device: torch.device):
    """The DES-SAM model for `config` (trainable parts freshly initialised) and its SAM identity. The
    model's `config` is the one it was built with: `config` with an official checkpoint given as
    `model.sam` named as its variant, and `model.image_size` the SAM's own."""
    sam_name, checkpoint = config.model.sam, config.model.sam_checkpoint
    sam = build_sam(sam_name, checkpoint, config.model.image_size)
    if checkpoint is None and Path(str(sam_name)).suffix in (".pth", ".pt"):
        sam_name, checkpoint = recognise_variant(sam_name), sam_name
        config = config.replace({"model.sam": sam_name, "model.sam_checkpoint": str(checkpoint)})
    identity = sam_identity(sam_name, checkpoint, sam)
    torch.manual_seed(config.train.seed)
    model = build_dessam(config, sam).to(device)
    return model, identity


def training_factor(config: Config) -> Optional[float]:
    """How much training images are resampled: None with `fit` scaling (each fitted to the input),
    1 with `nucleus` scaling (the prepared images are at the model's scale already), else the
    training images' pixel size over the model's (1: native resolution)."""
    if config.model.input_scaling == "fit":
        return None
    if config.model.input_scaling == "nucleus":
        return 1.0
    check_pixel_size(config.train.pixel_size_um, "train.pixel_size_um")
    check_pixel_size(config.model.pixel_size_um, "model.pixel_size_um")
    if config.train.pixel_size_um and config.model.pixel_size_um:
        return config.train.pixel_size_um / config.model.pixel_size_um
    return 1.0


def model_scale(config: Config, items: list, factor: Optional[float], prepared=None) -> ModelScale:
    """The scale the model is trained at, as recorded in model.pt; with `nucleus` scaling (`prepared`
    set), the nucleus size and the training set's median resampling (used when a new image's
    nucleus size is neither given nor estimated)."""
    if prepared is not None:
        pixel_size = config.train.pixel_size_um / prepared.median_factor if config.train.pixel_size_um else None
        return ModelScale("nucleus", prepared.median_factor, pixel_size, float(config.model.nucleus_px))
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


@dataclass
class TrainResult:
    model_path: Path
    iterations: int
    epochs_done: int
    skipped_nonfinite: int
    clipped_boxes: int
    dropped_boxes: int
    encoder_runs: int            # images encoded (the embedding cache's misses): once per image, however many epochs
    mask_annotations: int = 0    # annotations supervised with their given masks
    box_annotations: int = 0     # ... and with their boxes (the teacher's pseudo-masks)
    stopped: bool = False        # `on_iteration` asked to stop before the schedule's end
    start: str = ""              # where the trained weights started from
    terms: Optional[Terms] = None   # the licence the model's weights inherit (recorded in model.pt)


def train(config: Config, train_json, images_dir, out_dir, val_json=None, resume: bool = False,
          progress: bool = True, on_iteration: Optional[Callable[[int, int, float], bool]] = None,
          data_terms: Optional[Terms] = None) -> TrainResult:
    """Train DES-SAM from the boxes (and any masks) of `train_json` into `out_dir` (see the module
    docstring); `resume` continues from `out_dir/checkpoints/last.pt`. `data_terms`: the licence of
    the training data when dessam knows it (a corpus); model.pt records the terms its weights inherit.

    on_iteration(iteration, total, loss): called after every iteration (single process; a viewer's
    loss readout); when it returns True, training stops there and saves what it has, as at the
    end of the schedule (model.pt, last.pt; `resume` goes on from it).
    """
    return Trainer(config, train_json, images_dir, out_dir, val_json, resume, progress, on_iteration, data_terms).run()


class Trainer:
    """One training run. `run()` calls the steps in order; each step leaves its results on `self`."""

    def __init__(self, config: Config, train_json, images_dir, out_dir, val_json=None, resume: bool = False,
                 progress: bool = True, on_iteration: Optional[Callable[[int, int, float], bool]] = None,
                 data_terms: Optional[Terms] = None):
        self.config, self.train_json, self.images_dir, self.out_dir = config, train_json, images_dir, Path(out_dir)
        self.val_json, self.resume, self.progress, self.on_iteration = val_json, resume, progress, on_iteration
        self.data_terms = data_terms
        self.dist = distributed.current()
        self.device = resolve_device(config.train.device) if not self.dist.enabled else self.dist.device
        self.last_path = self.out_dir / "checkpoints" / "last.pt"
        self.epoch = self.start_batch = self.iteration = self.nonfinite_run = self.skipped_total = 0
        self.recent, self.log, self.bar, self.stopped = [], None, None, False

    def run(self) -> TrainResult:
        self.prepare()
        self.build()
        try:
            self.run_schedule()
            self.finish()
        finally:
            if self.bar is not None:
                self.bar.close()
            if self.log is not None:
                self.log.close()
        return TrainResult(self.out_dir / "model.pt", self.iteration, self.epoch, self.skipped_total,
                           self.dataset.clipped_boxes, self.dataset.dropped_boxes, self.cache.misses,
                           self.mask_annotations, self.box_annotations, self.stopped, self.start.note, self.terms)

    def prepare(self) -> None:
        """The training images with boxes, the run folder, and the checkpoint to resume from."""
        self.dataset = load_coco(self.train_json, self.images_dir)
        self.annotated = [record for record in self.dataset.images if len(record.boxes)]  # as the official filter_empty_gt
        if not self.annotated:
            raise DessamError(f"{self.train_json}: the dataset has no images with boxes; add annotations")
        if self.dist.is_main:
            try:
                self.out_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DessamError(f"{self.out_dir}: cannot create the run folder ({exc.strerror}); choose another --out") from None
            if not os.access(self.out_dir, os.W_OK):
                raise DessamError(f"{self.out_dir}: the run folder is not writable; choose another --out")
        self.prepared = self.prepared_val = None
        if self.config.model.input_scaling == "nucleus":
            self.prepare_nucleus_scale()
        self.state = None
        if self.resume:
            if self.dist.is_main:
                remove_stale_temporaries(self.out_dir, self.last_path.parent)
            if not self.last_path.is_file():
                raise DessamError(f"{self.last_path}: nothing to resume from; run without --resume")
            self.state = read_checkpoint(self.last_path)

    def prepare_nucleus_scale(self) -> None:
        """`nucleus` scaling: the training (and validation) images brought to the model's nucleus size,
        with augmented copies, written once into RUN/prepared/ (`dessam.training.prepared`)."""
        config = self.config
        folder = self.out_dir / "prepared"
        if self.dist.is_main:
            self.prepared = prepare_training_set(self.train_json, self.images_dir, folder / "train",
                                                 config.model.nucleus_px, config.train.copies, config.train.zoom,
                                                 config.train.recolour, config.train.seed, self.progress)
            if self.val_json is not None:
                self.prepared_val = prepare_training_set(self.val_json, self.images_dir, folder / "val",
                                                         config.model.nucleus_px, progress=False)
        distributed.barrier(self.dist)
        if not self.dist.is_main:  # the main process wrote them: read what it wrote
            self.prepared = prepare_training_set(self.train_json, self.images_dir, folder / "train",
                                                 config.model.nucleus_px, config.train.copies, config.train.zoom,
                                                 config.train.recolour, config.train.seed, False)
        prepared = load_coco(self.prepared.json_path, self.prepared.images_dir)
        self.annotated = [record for record in prepared.images if len(record.boxes)]

    def build(self) -> None:
        """The model and its starting weights, the cached embeddings, the optimizer, and the position
        in the schedule (restored when resuming)."""
        self.model, self.identity = build_model(self.config, self.device)
        self.config = config = self.model.config
        state = self.state
        if state is not None and state["sam"]["sha256"] != self.identity["sha256"]:
            raise DessamError(f"{self.last_path}: this run was trained on other SAM weights ({state['sam']['name']}); "
                              f"resume with the same --sam and --sam-checkpoint")
        self.start = (starting_weights(self.model, self.identity, config.train.init) if state is None
                      else Start(self.last_path, "resumed"))
        self.terms = (Terms.from_dict(state["licence"]) if state is not None and state.get("licence") else
                      training_terms(sam_terms(self.identity["name"], config.model.sam_checkpoint), self.start.terms,
                                     self.data_terms))
        self.encode_images()
        self.batches_per_epoch = math.ceil(len(self.items) / config.train.batch_size)
        self.config = config = stretched_schedule(config, self.batches_per_epoch)
        self.mask_annotations, self.box_annotations = supervision_counts(self.annotated)
        self.parameters = self.model.trainable_parameters()
        self.optimizer = make_optimizer(config, self.parameters, learning_rate(config, 0, 0, self.dist.world_size))
        self.wrapped = distributed.wrap(self.model, self.dist)
        if state is not None:
            self.model.load_trainable_state_dict(state["state_dict"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.epoch, self.start_batch, self.iteration = state["epoch"], state["batch"], state["iteration"]
            self.nonfinite_run = state["nonfinite_run"]
            torch.set_rng_state(state["torch_rng"])
        if self.dist.is_main:
            save_config(config, self.out_dir / "config.yaml")
            self.log = LossLog(self.out_dir / "log.csv", keep_until=self.iteration if state is not None else None)

    def encode_images(self) -> None:
        """Every training view's embedding, cached; the scale the model is trained at."""
        cache_dir = Path(self.config.train.cache_dir) if self.config.train.cache_dir else self.out_dir / "cache"
        self.cache = EmbeddingCache(cache_dir, encoder_key=f"{self.identity['sha256']}:{self.model.image_size}")
        records = distributed.shard(self.annotated, self.dist)
        factor = training_factor(self.config)
        self.items = encode_training_set(self.model, records, self.cache, self.device,
                                         self.progress and self.dist.is_main, factor, given_masks=True)
        if not self.items:
            raise DessamError(f"{self.train_json}: no image keeps a box at the model's scale; check the boxes and "
                              "--pixel-size")
        self.scale = model_scale(self.config, self.items, factor, self.prepared)

    def run_schedule(self) -> None:
        """Epochs of batches in a seeded order until the epochs or `train.max_iters` are done, or
        until `on_iteration` asks to stop."""
        train_config = self.config.train
        batch_size = train_config.batch_size
        self.total = train_config.epochs * self.batches_per_epoch
        if train_config.max_iters is not None:
            self.total = min(self.total, train_config.max_iters)
        self.bar = tqdm(total=self.total, initial=self.iteration, desc="Training", unit="it",
                        disable=not (self.progress and self.dist.is_main))
        self.model.train()
        while self.epoch < train_config.epochs and self.iteration < self.total:
            order = epoch_order(train_config.seed, self.epoch, len(self.items))
            for batch in range(self.start_batch, self.batches_per_epoch):
                if self.iteration >= self.total:
                    break
                self.step([self.items[i] for i in order[batch * batch_size:(batch + 1) * batch_size]])
                if self.stopped or (self.iteration >= self.total and batch + 1 < self.batches_per_epoch):
                    self.start_batch = batch + 1
                    break
            else:
                self.end_epoch()
                continue
            break

    def step(self, chosen: list) -> None:
        """One optimisation step on the batch `chosen` (skipped when its loss is not finite)."""
        lr = learning_rate(self.config, self.iteration, self.epoch, self.dist.world_size, self.batches_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        embeddings, rgb, normalised, boxes, sizes = batch_tensors(self.model, chosen, self.cache, self.device)
        losses = self.wrapped(embeddings, rgb, normalised, boxes, sizes, gt_masks=batch_masks(chosen, self.device))
        total_loss = self.model.weighted_total(losses)
        finite = distributed.all_finite(self.dist, total_loss)  # every rank takes part, every step
        self.optimizer.zero_grad(set_to_none=True)
        if finite:
            total_loss.backward()
            if self.config.train.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.parameters, self.config.train.grad_clip)
            self.optimizer.step()
            self.nonfinite_run = 0
        else:
            self.nonfinite_run += 1
            self.skipped_total += 1
        self.iteration += 1
        if self.iteration % 100 == 0:
            return_freed_memory()
        self.record(lr, total_loss, losses, finite)

    def record(self, lr: float, total_loss, losses: dict, finite: bool) -> None:
        """The step's row of log.csv, the progress bar and `on_iteration`; stop after too many non-finite
        losses in a row, or when `on_iteration` returns True."""
        row = {"epoch": self.epoch, "iteration": self.iteration, "lr": f"{lr:.6g}", "total": f"{total_loss.item():.6g}",
               "skipped_nonfinite": int(not finite)}
        row.update({name: f"{losses[name].item():.6g}" for name in LOSS_NAMES})
        if self.log is not None:
            self.log.write(row)
        if finite:
            self.recent = (self.recent + [total_loss.item()])[-20:]
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{np.mean(self.recent):.4f}" if self.recent else "nan", lr=f"{lr:.2g}")
        if self.nonfinite_run >= self.config.train.max_nonfinite:
            kept = (f"the last good checkpoint {self.last_path} is intact" if self.last_path.is_file()
                    else "no checkpoint was written yet")
            raise DessamError(
                f"training stopped: {self.nonfinite_run} non-finite losses in a row at iteration {self.iteration}; "
                f"{kept}; lower train.lr or set train.grad_clip"
            )
        if self.on_iteration is not None:
            self.stopped = bool(self.on_iteration(self.iteration, self.total, total_loss.item()))

    def end_epoch(self) -> None:
        """The next epoch's position; the last checkpoint, the epoch's checkpoint and model.pt (the
        last one first: a run killed between the two still resumes from this epoch)."""
        self.epoch, self.start_batch = self.epoch + 1, 0
        if self.dist.is_main:
            state_now = self.model.trainable_state_dict()
            self.write_checkpoint(self.last_path, state_now)
            self.write_checkpoint(self.last_path.parent / f"epoch_{self.epoch:03d}.pt", state_now)
            save_model_file(self.out_dir / "model.pt", state_now, self.config, self.identity, self.epoch, self.iteration,
                            self.scale, self.terms.to_dict())

    def write_checkpoint(self, path: Path, state_now: dict) -> None:
        save_checkpoint(path, state_now, self.optimizer, self.config, self.identity, self.epoch, self.start_batch,
                        self.iteration, self.nonfinite_run, self.terms.to_dict())

    def finish(self) -> None:
        """The last checkpoint, model.pt and data_report.txt (rank 0), and the validation losses."""
        distributed.write_rank_digest(self.model.trainable_state_dict(), self.dist)
        if not self.dist.is_main:
            return
        state_now = self.model.trainable_state_dict()
        self.write_checkpoint(self.last_path, state_now)
        save_model_file(self.out_dir / "model.pt", state_now, self.config, self.identity, self.epoch, self.iteration,
                        self.scale, self.terms.to_dict())
        dataset = self.dataset
        write_text_atomic(self.out_dir / "data_report.txt",
                          f"images: {len(dataset.images)}\nclipped boxes: {dataset.clipped_boxes}\n"
                          f"dropped zero-size boxes: {dataset.dropped_boxes}\n"
                          f"annotations supervised with masks: {self.mask_annotations}\n"
                          f"annotations supervised with boxes: {self.box_annotations}\n"
                          f"skipped non-finite iterations: {self.skipped_total}\n")
        if self.val_json is not None:
            val_json, val_images = ((self.prepared_val.json_path, self.prepared_val.images_dir) if self.prepared_val
                                    else (self.val_json, self.images_dir))
            write_validation_losses(self.model, self.config, val_json, val_images, self.cache, self.device,
                                    self.out_dir / "val.csv", self.progress)
