"""Files -> numpy: image I/O, COCO annotations, converters, validation and synthetic cytology.

Nothing here imports torch.
"""

from .coco import (
    CocoDataset,
    ImageRecord,
    dataset_has_masks,
    has_masks,
    label_map_to_annotations,
    load_coco,
    mask_to_rle,
    record_label_map,
    record_masks,
    rle_to_mask,
    write_coco,
)
from .images import MAX_PIXELS, image_shape, read_image, read_image_raw, write_png

__all__ = [
    "CocoDataset",
    "ImageRecord",
    "MAX_PIXELS",
    "dataset_has_masks",
    "has_masks",
    "image_shape",
    "label_map_to_annotations",
    "load_coco",
    "mask_to_rle",
    "read_image",
    "read_image_raw",
    "record_label_map",
    "record_masks",
    "rle_to_mask",
    "write_coco",
    "write_png",
]
