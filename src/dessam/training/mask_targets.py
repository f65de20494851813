"""A training file's masks as distillation targets: mixed box and mask supervision.

Any annotation of a training file may carry a segmentation (some nuclei, some whole images, or
all). Its mask is decoded once, when training starts, rasterised into the low-resolution logit
frame and kept as a small crop there (`dessam.models.frame_masks`); the proposals matched to it
then learn that mask instead of the teacher's pseudo-mask. Annotations without a segmentation
train from their boxes as DES-SAM does.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..data.coco import segmentation_to_mask
from ..errors import DessamError
from ..geometry.mapping import tight
from ..models.frame_masks import FrameMasks, rasterise
from .views import TrainingView


def supervision_counts(records: list) -> tuple:
    """(annotations with a given mask, annotations with a box only) over `records`."""
    masks = sum(seg is not None for record in records for seg in record.segmentations)
    boxes = sum(len(record.segmentations) for record in records) - masks
    return masks, boxes


def view_frame_masks(view: TrainingView, input_size: int, frame_size: int) -> Optional[FrameMasks]:
    """The given masks of a view's annotations in the low-resolution frame of its input, None when
    it has none (see `dessam.training.views`).

    Masks are decoded one at a time, so memory holds one full-size mask at most.
    """
    record = view.record
    segmentations = [record.segmentations[i] for i in view.annotations]
    if all(seg is None for seg in segmentations):
        return None
    (scale_y, scale_x), (offset_y, offset_x) = view.scale, view.offset
    crops, origins = [], []
    for seg, index in zip(segmentations, view.annotations):
        if seg is None:
            crops.append(None)
            origins.append((0, 0))
            continue
        where = f"{record.file_name} annotation {record.annotation_ids[index]}"
        crop, top, left = tight(segmentation_to_mask(seg, record.height, record.width, where), 0, 0)
        if not crop.size:
            raise DessamError(f"{where}: the segmentation is empty; remove it to train that nucleus from its box")
        frame_crop, row, col = rasterise(crop, top - offset_y / scale_y, left - offset_x / scale_x,
                                         (scale_y, scale_x), input_size, frame_size)
        crops.append(torch.from_numpy(frame_crop))
        origins.append((row, col))
    return FrameMasks(crops, torch.tensor(origins, dtype=torch.long).reshape(-1, 2))
