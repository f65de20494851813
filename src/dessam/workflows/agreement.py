"""Whether two paths give the same masks: the mean mask IoU over at least `MIN_MASKS` masks prompted
with the same boxes (a check over fewer masks passes nothing)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..inference.instances import mask_ious


MIN_MASKS = 100          # an agreement check over fewer masks passes nothing


REQUIRED_IOU = 0.98


@dataclass
class Agreement:
    """Masks of two paths prompted with the same boxes: their mean IoU over `masks` masks."""

    iou: float
    masks: int

    @property
    def passed(self) -> bool:
        return self.masks >= MIN_MASKS and self.iou >= REQUIRED_IOU

    def verdict(self) -> str:
        if self.masks < MIN_MASKS:
            return (f"NOT passed: fewer than {MIN_MASKS} masks to compare (give a model that finds nuclei, and "
                    "--images with nuclei)")
        return "passed" if self.passed else f"FAILED (required >= {REQUIRED_IOU})"


def input_tiles(images: list, size: int) -> list:
    """The images cut into pieces of at most `size` x `size` (each one model input)."""
    return [image[y:y + size, x:x + size] for image in images
            for y in range(0, image.shape[0], size) for x in range(0, image.shape[1], size)]


def mask_agreement(first, second, images: list, postprocess=None) -> Agreement:
    """Both paths prompted with the first path's detections on every input-sized piece of `images`."""
    ious = []
    for tile in input_tiles(images, first.image_size):
        encoded = first.encode([tile])
        boxes = [first.detect(encoded, postprocess)[0][0]]
        [a] = first.segment(encoded, boxes)
        [b] = second.segment(second.encode([tile]), boxes)
        ious.append(mask_ious(a, b))
    ious = np.concatenate(ious) if ious else np.ones(0)
    return Agreement(float(ious.mean()) if len(ious) else 1.0, len(ious))
