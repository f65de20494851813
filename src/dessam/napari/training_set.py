"""The open layers as a training set: images, their boxes and the masks a person corrected,
written as the COCO file `dessam train` reads (`dessam.data.coco`).

Per image: every label of its masks layer is an annotation with its mask (supervised by it:
mixed supervision); every rectangle of its boxes layer is a box-only annotation, unless a mask
covers the same nucleus (its box and the mask's box overlap by IoU >= `SAME_NUCLEUS`), which then
stands for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torchvision.ops import box_iou

from ..data.coco import label_map_to_annotations, write_coco
from ..data.images import write_png
from ..errors import DessamError

SAME_NUCLEUS = 0.5


@dataclass
class Annotated:
    name: str                          # the image layer's name
    image: np.ndarray                  # H x W x 3 uint8
    boxes: np.ndarray                  # (N, 4) x1 y1 x2 y2
    masks: Optional[np.ndarray] = None  # H x W labels, 0 = background


@dataclass
class TrainingSet:
    json_path: Path
    images_dir: Path
    images: int
    mask_annotations: int
    box_annotations: int


def check_annotated(items: list) -> list:
    """`items`, refused when they hold no box and no mask, or masks of another size than their image."""
    if not any(len(item.boxes) or (item.masks is not None and item.masks.any()) for item in items):
        raise DessamError("no boxes to train from: draw a rectangle around each nucleus in a Shapes layer on an "
                          "image and choose that layer as the image's boxes")
    for item in items:
        height, width = item.image.shape[:2]
        if item.masks is not None and item.masks.shape != (height, width):
            raise DessamError(f"the masks of '{item.name}' are {item.masks.shape[1]} x {item.masks.shape[0]} px "
                              f"but the image is {width} x {height}; choose the masks drawn on this image")
    return items


def write_training_set(items: list, folder) -> TrainingSet:
    """Write `items` (one `Annotated` per image, see `check_annotated`) into `folder` as images/ and
    train.json."""
    check_annotated(items)
    folder = Path(folder)
    images, annotations, masked, boxed = [], [], 0, 0
    for image_id, item in enumerate(items, start=1):
        height, width = item.image.shape[:2]
        file_name = f"image_{image_id:03d}.png"
        write_png(folder / "images" / file_name, item.image)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        given = []
        if item.masks is not None:
            given = label_map_to_annotations(item.masks, image_id, first_ann_id=len(annotations) + 1)
            annotations += given
        boxes = np.asarray(item.boxes, dtype=np.float64).reshape(-1, 4)
        if given and len(boxes):
            covered = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                                for a in given], dtype=np.float64)
            boxes = boxes[(box_iou(torch.from_numpy(boxes), torch.from_numpy(covered)).amax(dim=1) < SAME_NUCLEUS).numpy()]
        for x1, y1, x2, y2 in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "bbox": [round(float(v), 2) for v in (x1, y1, x2 - x1, y2 - y1)],
                                "area": round(float((x2 - x1) * (y2 - y1)), 2), "iscrowd": 0})
        masked, boxed = masked + len(given), boxed + len(boxes)
    json_path = write_coco(folder / "train.json", images, annotations)
    return TrainingSet(json_path, folder / "images", len(images), masked, boxed)
