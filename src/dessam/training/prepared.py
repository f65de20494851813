"""Training images brought to the model's nucleus size, with augmented copies (`nucleus` scaling).

With `model.input_scaling: nucleus` a model never sees an image at the size it was acquired: each
training image is resampled so that its typical nucleus (the median side, sqrt(w x h), of its boxes)
is `model.nucleus_px` pixels, as prediction resamples every image (`dessam.geometry.scale`).
`train.copies` versions of each image are written once into RUN/prepared/ (a COCO file and PNGs):
the first at exactly that size, the others also zoomed by a factor drawn log-uniformly from
`train.zoom`, turned by a quarter turn, flipped and, with `train.recolour`, recoloured
(`dessam.data.augment.recolour`: stain jitter, grey, inverted fluorescence, blur, noise). The zoom
teaches the detector nuclei of other sizes than the median, and forgives an estimate of a new
image's nucleus size that is off. The Trainer then trains on the prepared set at its own scale, so
each copy is encoded once and cached, as every training image is.

An image with fewer than five boxes takes the median over the training set (a partly boxed
image says little about its nuclei's size). Given masks are carried along with their boxes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..data.augment import recolour
from ..data.coco import load_coco, mask_to_rle, read_record_image, segmentation_to_mask, write_coco
from ..data.images import write_png
from ..geometry.inputs import resize_by
from ..geometry.scale import box_sides, median_box_side
from .batches import return_freed_memory

FACTOR_RANGE = (0.05, 8.0)   # a typical nucleus of 3 to 480 px: outside, the image is brought as near as it goes
MAX_SIDE = 4096              # an image is never made larger than this on its longer side
VERSION = 1                  # of the preparation: a prepared set made by another version is made again


@dataclass
class PreparedSet:
    json_path: Path
    images_dir: Path
    median_factor: float     # the median resampling of the copies at exactly the nucleus size
    median_nucleus: float    # the training boxes' median side before resampling (pixels)


def image_factors(records: list, nucleus_px: float) -> list:
    """Per record, the resampling that brings its median box side to `nucleus_px`."""
    every = np.concatenate([box_sides(r.boxes) for r in records] or [np.zeros(0)])
    overall = float(np.median(every)) if every.size else nucleus_px
    factors = []
    for record in records:
        median = median_box_side(record.boxes) or overall
        factors.append(float(np.clip(nucleus_px / max(median, 1.0), *FACTOR_RANGE)))
    return factors


def _preparation_key(train_json: Path, nucleus_px: float, copies: int, zoom: tuple, colour: bool, seed: int) -> str:
    digest = hashlib.sha256(Path(train_json).read_bytes()).hexdigest()
    settings = json.dumps([VERSION, digest, float(nucleus_px), int(copies), [float(z) for z in zoom], bool(colour),
                           int(seed)])
    return hashlib.sha256(settings.encode()).hexdigest()


def _transform_boxes(boxes: np.ndarray, shape: tuple, turns: int, flip: bool) -> np.ndarray:
    """x1y1x2y2 boxes of an image of `shape` (H, W) after np.rot90(k=turns) and a left-right flip."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    height, width = shape
    for _ in range(turns % 4):  # rot90 (counter-clockwise): (x, y) -> (y, W - x)
        x1, y1, x2, y2 = boxes.T.copy()
        boxes = np.stack([y1, width - x2, y2, width - x1], 1)
        height, width = width, height
    if flip:
        boxes = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
    return boxes


def _transform(array: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    out = np.rot90(array, turns)
    return np.ascontiguousarray(out[:, ::-1] if flip else out)


def prepare_training_set(train_json, images_dir, out_dir, nucleus_px: float, copies: int = 1,
                         zoom: tuple = (1.0, 1.0), colour: bool = False, seed: int = 0,
                         progress: bool = True) -> PreparedSet:
    """Write the prepared set (see the module docstring) into `out_dir` and return where it is; an
    earlier preparation of the same file with the same settings is reused."""
    out_dir = Path(out_dir)
    key = _preparation_key(train_json, nucleus_px, copies, zoom, colour, seed)
    json_path, stamp = out_dir / "train.json", out_dir / "prepared.json"
    if json_path.is_file() and stamp.is_file():
        recorded = json.loads(stamp.read_text())
        if recorded.get("key") == key:
            return PreparedSet(json_path, out_dir / "images", recorded["median_factor"], recorded["median_nucleus"])
    dataset = load_coco(train_json, images_dir)
    records = [record for record in dataset.images if len(record.boxes)]
    factors = image_factors(records, nucleus_px)
    low, high = np.log(zoom[0]), np.log(zoom[1])
    images, annotations = [], []
    for index, (record, factor) in enumerate(tqdm(list(zip(records, factors)), desc="Preparing images", unit="img",
                                                  disable=not progress)):
        image = read_record_image(record)
        rng = np.random.default_rng([seed, index])
        for copy in range(max(int(copies), 1)):
            augmented = copy > 0
            scale = factor * float(np.exp(rng.uniform(low, high))) if augmented else factor
            scale = min(scale, MAX_SIDE / max(record.height, record.width))
            turns, flip = (int(rng.integers(4)), bool(rng.random() < 0.5)) if augmented else (0, False)
            working = resize_by(image, scale)
            resized_hw = working.shape[:2]
            sx, sy = resized_hw[1] / record.width, resized_hw[0] / record.height
            boxes = _transform_boxes(record.boxes * np.float32([sx, sy, sx, sy]), resized_hw, turns, flip)
            working = _transform(working, turns, flip)
            if augmented and colour:
                working = recolour(rng, working)
            file_name = f"{index:06d}_{copy}.png"
            write_png(out_dir / "images" / file_name, working)
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": file_name, "height": working.shape[0],
                           "width": working.shape[1]})
            for box, segmentation, annotation_id in zip(boxes, record.segmentations, record.annotation_ids):
                annotation = {"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                              "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                              "area": float((box[2] - box[0]) * (box[3] - box[1]))}
                if segmentation is not None:
                    where = f"{record.file_name} annotation {annotation_id}"
                    mask = segmentation_to_mask(segmentation, record.height, record.width, where)
                    small = np.asarray(Image.fromarray(mask).resize(resized_hw[::-1], Image.NEAREST))
                    annotation["segmentation"] = mask_to_rle(_transform(small, turns, flip))
                annotations.append(annotation)
        return_freed_memory()
    write_coco(json_path, images, annotations)
    sides = np.concatenate([box_sides(r.boxes) for r in records])
    summary = {"key": key, "median_factor": float(np.median(factors)), "median_nucleus": float(np.median(sides))}
    stamp.write_text(json.dumps(summary))
    return PreparedSet(json_path, out_dir / "images", summary["median_factor"], summary["median_nucleus"])
