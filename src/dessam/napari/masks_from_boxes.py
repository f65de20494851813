"""Masks from boxes: the mask of every rectangle of a Shapes layer, as `dessam label` draws it.

The boxes go to `dessam.inference.box_masks.box_masks`, drawn by SAM alone (the frozen teacher)
or by a trained model's learned token. The result is a Labels layer in which label k is the k-th
rectangle; its features table holds, per box, SAM's predicted IoU and stability score, the flags
of `dessam label` (`empty`, `outside`: more of the mask than allowed lies outside its box) and the
review order of its review sheet (flagged masks first, then the least certain): `review_rank` 1 is
the first to check, and `review` marks the masks the review sheet would show.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import napari
import numpy as np

from ..errors import DessamError
from ..inference.box_masks import box_masks
from ..labeling.label import REVIEW_COUNT, mask_flags
from ..labeling.review import certainty, review_order
from .job_widget import JobWidget, find_layer, layer_box
from .layers import BOX_COLUMNS, layer_image, shape_boxes
from .model_choice import ModelChoice, licence_note, load

SUFFIX = " masks"


@dataclass
class Drawn:
    image_layer: object
    labels: np.ndarray
    features: dict
    clipped: int
    skipped: int
    licence: str = ""   # the line naming non-commercial weights, or ""


def mask_features(masks, boxes: np.ndarray) -> dict:
    """The features table of the masks of `boxes` (row k: label k + 1, box k)."""
    instances = masks.instances
    fractions, flags = zip(*[mask_flags(crop, origin, box) for crop, origin, box
                             in zip(instances.crops, instances.origins, boxes)]) if len(boxes) else ((), ())
    sure = [certainty(float(i), float(s)) for i, s in zip(masks.predicted_iou, masks.stability)]
    order = review_order([SimpleNamespace(index=k, flags=f, certainty=c) for k, (f, c) in enumerate(zip(flags, sure))])
    rank = np.empty(len(boxes), dtype=np.int64)
    rank[[item.index for item in order]] = np.arange(1, len(boxes) + 1)
    ids = list(range(1, len(boxes) + 1))
    features = {"index": ids, "id": ids}
    for k, name in enumerate(BOX_COLUMNS):
        features[name] = np.round(boxes[:, k].astype(np.float64), 2).tolist()
    features.update({
        "area_px2": instances.areas().tolist(),
        "predicted_iou": np.round(masks.predicted_iou, 4).tolist(),
        "stability_score": np.round(masks.stability, 4).tolist(),
        "certainty": np.round(sure, 4).tolist(),
        "outside_fraction": np.round(fractions, 4).tolist(),
        "flags": [" ".join(f) for f in flags],
        "review_rank": rank.tolist(),
        "review": (rank <= REVIEW_COUNT).tolist(),
    })
    return features


class MasksFromBoxesWidget(JobWidget):
    run_text = "Draw masks"

    def __init__(self, viewer: napari.viewer.Viewer):
        self.image = layer_box(viewer, "image", "Image")
        self.boxes = layer_box(viewer, "boxes", "Shapes", tooltip="a Shapes layer of rectangles, one per nucleus")
        self.model = ModelChoice(teachers=True)
        super().__init__(viewer, [self.image, self.boxes, self.model])

    def prepare(self):
        layer, shapes = self.image.value, self.boxes.value
        if layer is None:
            raise DessamError("no image: open an image (File > Open) and choose it in 'image'")
        if shapes is None:
            raise DessamError("no boxes: add a Shapes layer, draw a rectangle around each nucleus "
                              "and choose it in 'boxes'")
        image = layer_image(layer)
        found = shape_boxes(shapes, image.shape, layer)
        if not len(found.boxes):
            raise DessamError(f"shapes layer '{shapes.name}' holds no rectangles; draw one around each nucleus "
                              "with the rectangle tool")
        spec = self.model.spec()

        def work(job) -> Drawn:
            masks = box_masks(load(spec), image, found.boxes, use_token=spec.use_token, on_window=job.window)
            labels = masks.instances.paint()   # label k + 1 is box k; a later box wins an overlap
            return Drawn(layer, labels, mask_features(masks, found.boxes), found.clipped, found.skipped,
                         licence_note(spec))

        return work

    def finish(self, result: Drawn) -> str:
        name = result.image_layer.name + SUFFIX
        existing = find_layer(self.viewer, name, "Labels")
        if existing is not None:
            existing.data, existing.features = result.labels, result.features
        else:
            self.viewer.add_labels(result.labels, name=name, features=result.features,
                                   scale=result.image_layer.scale[:2], translate=result.image_layer.translate[:2])
        flags = result.features["flags"]
        notes = [f"{sum('empty' in f for f in flags)} empty", f"{sum('outside' in f for f in flags)} leaving their box"]
        if result.clipped:
            notes.append(f"{result.clipped} boxes clipped to the image")
        if result.skipped:
            notes.append(f"{result.skipped} shapes skipped (not rectangles, or without area)")
        return (f"{len(flags)} masks in '{name}' ({self.seconds:.1f} s): {', '.join(notes)}; "
                f"review_rank 1 in its features table is the first to check{result.licence}")
