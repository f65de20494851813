"""Train from boxes: a DES-SAM model from the boxes (and corrected masks) drawn on open images.

One row per open image: whether to use it, its boxes (a Shapes layer of rectangles) and, if any,
its masks (a Labels layer whose masks a person has checked or corrected: they supervise their
nuclei, the boxes the rest; see `dessam.napari.training_set`). The layers are written as a COCO
training set in a temporary folder and trained on by `dessam.training.train.train`, the code of
`dessam train`, in a worker; the loss shows live; Stop ends training early and keeps the model as
trained so far. The model is copied to the chosen file only when training has ended, under a
temporary name then renamed, so a model file is never left half-written.

Settings: SAM `default` (the bundled teacher) trains with the `cpu` preset, as `dessam train --sam
default` does; an official SAM (once fetched) with the authors' `patchseg` one. `iterations` is the
number of training steps (one window of an image each); the preset's learning-rate schedule
(warm-up, decay) is stretched or shrunk to fit it.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, SpinBox

from ..atomic import atomic_path
from ..config import Config
from ..data.coco import load_coco
from ..errors import DessamError
from ..models.default_teacher import TEACHER_FILES
from ..models.fetch import find_sam_checkpoint, sam_file_name
from ..models.sam import OFFICIAL_VARIANTS
from ..config.presets import implied_preset
from ..training.prepared import image_factors
from ..training.schedule import with_epochs
from ..training.train import train, training_factor
from ..training.views import training_views
from .job_widget import JobWidget, is_layer, layer_box
from .layers import rgb_image, shape_boxes
from .training_set import Annotated, TrainingSet, check_annotated, write_training_set

DEFAULT_ITERATIONS = 300
LOSS_WINDOW = 20   # iterations in the loss readout's running mean


def sam_choices() -> list:
    """The bundled teachers and the official SAMs already fetched (`dessam fetch-sam`)."""
    bundled = [name for name, path in TEACHER_FILES.items() if path.is_file()]
    return bundled + [name for name in OFFICIAL_VARIANTS if find_sam_checkpoint(sam_file_name(name))]


def preset_config(sam: str) -> Config:
    """The configuration `dessam train --sam SAM` starts from (`tiny`: the tests' small SAM)."""
    overrides = {"model.sam": sam}
    if sam in OFFICIAL_VARIANTS:
        overrides["model.sam_checkpoint"] = str(find_sam_checkpoint(sam_file_name(sam)))
    return Config.compose(implied_preset(sam) or ("tiny" if sam == "tiny" else "patchseg"), overrides=overrides)


def fit_schedule(config: Config, iterations: int, views: int) -> Config:
    """`config` trained for `iterations` steps over `views` training windows: as many epochs as
    that takes, the preset's learning-rate steps at the same fractions of the run, warm-up at most
    a quarter of it."""
    epochs = max(1, math.ceil(iterations / max(views, 1)))
    return with_epochs(config, epochs).replace({
        "train.max_iters": int(iterations),
        "train.min_iters": None,
        "train.warmup_iters": min(config.train.warmup_iters, max(iterations // 4, 1)),
    })


def count_views(config: Config, data: TrainingSet) -> int:
    """The training windows of the set at the model's scale: what one epoch goes over."""
    records = [record for record in load_coco(data.json_path, data.images_dir).images if len(record.boxes)]
    if config.model.input_scaling == "fit":
        return len(records)
    if config.model.input_scaling == "nucleus":  # each image at its own median box, in train.copies versions
        factors = image_factors(records, config.model.nucleus_px)
        return config.train.copies * sum(len(training_views(record, config.model.image_size, factor))
                                         for record, factor in zip(records, factors))
    factor = training_factor(config)
    return sum(len(training_views(record, config.model.image_size, factor)) for record in records)


def checked_model_path(text: str) -> Path:
    """Where the model is to be saved, refused before any work when it cannot be written there."""
    if not text.strip():
        raise DessamError("no model file: choose where to save the model in 'save model as' (e.g. model.pt)")
    path = Path(text.strip()).expanduser()
    if path.is_dir():
        raise DessamError(f"{path}: is a folder; give a file name such as {path / 'model.pt'}")
    if path.suffix != ".pt":
        raise DessamError(f"{path}: name the model file NAME.pt (e.g. model.pt)")
    if not path.parent.is_dir():
        raise DessamError(f"{path}: the folder {path.parent} does not exist; choose an existing folder")
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".dessam_write_test"):
            pass
        if path.exists():
            with open(path, "ab"):
                pass
    except OSError as exc:
        raise DessamError(f"{path}: the model file is not writable ({exc.strerror}); choose another place") from None
    return path


@dataclass
class Trained:
    model_path: Path
    iterations: int
    total: int
    stopped: bool
    data: TrainingSet
    terms: object = None   # the licence the model's weights inherit (`dessam.licences.Terms`)


class ImageRow(Container):
    """One open image: use it or not, its boxes layer and its masks layer."""

    def __init__(self, viewer, image_layer):
        self.image_layer = image_layer
        self.use = CheckBox(text=image_layer.name, value=False)
        self.boxes = layer_box(viewer, "boxes", "Shapes", optional=True, tooltip="rectangles around its nuclei")
        self.masks = layer_box(viewer, "masks", "Labels", optional=True,
                                      tooltip="masks a person has checked: they supervise their nuclei")
        super().__init__(widgets=[self.use, self.boxes, self.masks], layout="horizontal", labels=False)
        self.margins = (0, 0, 0, 0)
        named = [layer for layer in self.boxes.choices if layer is not None and layer.name.startswith(image_layer.name)]
        if named:
            self.boxes.value, self.use.value = named[0], True


class TrainWidget(JobWidget):
    run_text = "Train"
    stop_text = "Stop"
    stopped_message = "stopped before training began: no model was written"

    def __init__(self, viewer: napari.viewer.Viewer, sams: Optional[Sequence[str]] = None):
        self.rows = Container(labels=False)
        self.sam = ComboBox(label="SAM", choices=list(sams or sam_choices()),
                            tooltip="default: the small SAM bundled with dessam; vit_b etc. once fetched")
        self.iterations = SpinBox(label="iterations", value=DEFAULT_ITERATIONS, min=1, max=1_000_000,
                                  tooltip="training steps; each sees one window of one image")
        self.model_file = FileEdit(label="save model as", mode="w", filter="*.pt")
        self._losses = deque(maxlen=LOSS_WINDOW)
        super().__init__(viewer, [self.rows, self.sam, self.iterations, self.model_file])
        self.stop_button.tooltip = "stop training and save the model as trained so far"
        self._rebuild_rows()

    def _layers_changed(self, *_) -> None:
        super()._layers_changed()
        self._rebuild_rows()

    def _rebuild_rows(self) -> None:
        """One row per image layer; a row whose image is still open keeps the layers chosen in it
        while they are open (a row without boxes takes a boxes layer named after its image)."""
        before = {row.image_layer: (row.use.value, row.boxes.value, row.masks.value) for row in self.rows}
        self.rows.clear()
        for layer in self.viewer.layers:
            if not is_layer(layer, "Image"):
                continue
            row = ImageRow(self.viewer, layer)
            use, boxes, masks = before.get(layer, (None, None, None))
            if boxes is not None and boxes in row.boxes.choices:
                row.use.value, row.boxes.value = use, boxes
            if masks is not None and masks in row.masks.choices:
                row.masks.value = masks
            self.rows.append(row)

    def row(self, image_layer) -> ImageRow:
        return next(row for row in self.rows if row.image_layer is image_layer)

    def annotated(self) -> list:
        """The chosen images with their boxes and masks, checked."""
        items = []
        for row in self.rows:
            if not row.use.value:
                continue
            image = rgb_image(row.image_layer)
            boxes = (np.zeros((0, 4), np.float32) if row.boxes.value is None
                     else shape_boxes(row.boxes.value, image.shape, row.image_layer).boxes)
            items.append(Annotated(row.image_layer.name, image, boxes, None if row.masks.value is None
                                   else layer_masks(row.masks.value)))
        return items

    def prepare(self):
        items = check_annotated(self.annotated())
        model_path = checked_model_path(self.model_file.line_edit.value)
        sam, iterations = self.sam.value, int(self.iterations.value)
        self._losses.clear()

        def work(job) -> Trained:
            with tempfile.TemporaryDirectory(prefix="dessam-train-") as folder:
                data = write_training_set(items, Path(folder) / "data")
                config = preset_config(sam)
                config = fit_schedule(config, iterations, count_views(config, data))
                job.check()   # Stop before training began: nothing is written
                result = train(config, data.json_path, data.images_dir, Path(folder) / "run", progress=False,
                               on_iteration=job.iteration)
                with atomic_path(model_path) as tmp:
                    shutil.copyfile(result.model_path, tmp)
            return Trained(model_path, result.iterations, config.train.max_iters, result.stopped, data, result.terms)

        return work

    def progress_message(self, done: int, total: int, loss: float) -> str:
        if math.isfinite(loss):
            self._losses.append(loss)
        mean = sum(self._losses) / len(self._losses) if self._losses else float("nan")
        return f"iteration {done} of {total}: loss {loss:.4f} (mean of the last {len(self._losses)}: {mean:.4f})"

    def finish(self, result: Trained) -> str:
        how = (f"stopped at iteration {result.iterations} of {result.total}; the model as trained so far"
               if result.stopped else f"{result.iterations} iterations")
        data = result.data
        licence = (f"; {result.terms.notice('the model', 'SAM default-permissive')}"
                   if result.terms is not None and result.terms.non_commercial else "")
        return (f"{how} saved to {result.model_path} ({data.images} images, {data.box_annotations} boxes, "
                f"{data.mask_annotations} masks; {self.seconds:.0f} s){licence}")


def layer_masks(layer) -> np.ndarray:
    """The label image of a Labels layer of masks, 2-D."""
    data = np.asarray(layer.data)
    if data.ndim != 2:
        raise DessamError(f"labels layer '{layer.name}': {data.ndim}-D masks; choose 2-D masks drawn on the image")
    return data
