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

from ..data.coco import ImageRecord, segmentation_to_mask
from ..errors import DessamError
from ..inference.inputs import ModelInput
from ..models.frame_masks import FrameMasks, rasterise
from ..postprocess import tight


def supervision_counts(records: list) -> tuple:
    """(annotations with a given mask, annotations with a box only) over `records`."""
    masks = sum(seg is not None for record in records for seg in record.segmentations)
    boxes = sum(len(record.segmentations) for record in records) - masks
    return masks, boxes


def record_frame_masks(record: ImageRecord, inputs: ModelInput, frame_size: int) -> Optional[FrameMasks]:
    """The record's given masks in the low-resolution frame of `inputs`, None when it has none.

    Masks are decoded one at a time, so memory holds one full-size mask at most.
    """
    if all(seg is None for seg in record.segmentations):
        return None
    size = inputs.rgb.shape[-1]
    crops, origins = [], []
    for seg, annotation_id in zip(record.segmentations, record.annotation_ids):
        if seg is None:
            crops.append(None)
            origins.append((0, 0))
            continue
        where = f"{record.file_name} annotation {annotation_id}"
        crop, top, left = tight(segmentation_to_mask(seg, record.height, record.width, where), 0, 0)
        if not crop.size:
            raise DessamError(f"{where}: the segmentation is empty; remove it to train that nucleus from its box")
        frame_crop, row, col = rasterise(crop, top, left, inputs.original_hw, inputs.resized_hw, size, frame_size)
        crops.append(torch.from_numpy(frame_crop))
        origins.append((row, col))
    return FrameMasks(crops, torch.tensor(origins, dtype=torch.long).reshape(-1, 2))
