"""`dessam label`: a mask for every annotated box of a COCO file.

Each box is segmented by the trained student (a model file: its learned token, prompted with the
annotated box) or by the frozen teacher (SAM alone), see `dessam.inference.box_masks`. The output
is the input file with, on every annotation, an RLE `segmentation` at the image's size, its
`area`, SAM's `predicted_iou` and `stability_score`, and `label_flags`; ids, categories, boxes and
every other field are kept (a segmentation already there is replaced).

Flags, never a reason to drop an annotation:
- `empty`: the mask has no pixel (its annotation keeps its box and gets an empty RLE), also for
  zero-size boxes, which cannot be prompted;
- `outside`: more than `outside_fraction` of the mask's pixels lie outside the box grown by
  `outside_margin` of its width and height on each side (at least 2 pixels).
Crowd annotations (regions to ignore) are copied unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm.auto import tqdm

from ..data.coco import load_coco, mask_to_rle, read_json, read_record_image, write_coco
from ..data.validate import raise_on_errors, validate_coco
from ..errors import DessamError
from ..geometry.tiling import check_tiling
from ..inference.box_masks import box_masks
from ..inference.pipeline import Pipeline
from .review import ReviewItem, write_review

OUTSIDE_MARGIN = 0.1     # the box grows by this fraction of its width and height on each side ...
MIN_MARGIN_PX = 2.0      # ... and by at least this many pixels
OUTSIDE_FRACTION = 0.2   # a mask with more of its pixels outside that is flagged
REVIEW_COUNT = 48        # masks in the review mosaic


@dataclass
class LabelRun:
    out_json: Path
    images: int
    labelled: int         # annotations given a mask (empty ones included)
    empty: int
    outside: int
    crowd: int            # copied unchanged
    review: Optional[tuple] = None  # (review.png, review.csv)


def outside_fraction(crop: np.ndarray, origin, box: np.ndarray, margin: float = OUTSIDE_MARGIN) -> float:
    """The share of a mask's pixels whose centre lies outside `box` (x1y1x2y2) grown by `margin`
    of its width and height (at least `MIN_MARGIN_PX`) on each side; 0 for an empty mask."""
    area = int(crop.sum())
    if not area:
        return 0.0
    x1, y1, x2, y2 = (float(v) for v in box)
    grow_x, grow_y = max(margin * (x2 - x1), MIN_MARGIN_PX), max(margin * (y2 - y1), MIN_MARGIN_PX)
    rows = np.arange(origin[0], origin[0] + crop.shape[0]) + 0.5
    cols = np.arange(origin[1], origin[1] + crop.shape[1]) + 0.5
    inside_rows = (rows >= y1 - grow_y) & (rows <= y2 + grow_y)
    inside_cols = (cols >= x1 - grow_x) & (cols <= x2 + grow_x)
    inside = int((crop & inside_rows[:, None] & inside_cols[None, :]).sum())
    return 1.0 - inside / area


def mask_flags(crop: np.ndarray, origin, box: np.ndarray, outside_margin: float = OUTSIDE_MARGIN,
               outside_limit: float = OUTSIDE_FRACTION) -> tuple[float, list]:
    """(outside fraction, flags) of one mask: `empty` without a pixel, `outside` when more than
    `outside_limit` of its pixels lie outside its box grown by `outside_margin`."""
    fraction = outside_fraction(crop, origin, box, outside_margin)
    flags = ["empty"] if not crop.any() else ["outside"] if fraction > outside_limit else []
    return fraction, flags


def label_dataset(predictor: Pipeline, data_json, images_dir, out_json, review_dir=None, use_token: bool = True,
                  overlap: int = 64, outside_margin: float = OUTSIDE_MARGIN,
                  outside_limit: float = OUTSIDE_FRACTION, review_count: int = REVIEW_COUNT,
                  progress: bool = True) -> LabelRun:
    """Label every box of `data_json` (see the module docstring); nothing is written unless all
    images succeed. use_token: the student's learned token (False: the teacher)."""
    if not 0 <= outside_limit <= 1:
        raise DessamError(f"--outside-fraction {outside_limit}: use a share between 0 and 1")
    if outside_margin < 0:
        raise DessamError(f"--outside-margin {outside_margin}: use 0 or a positive fraction of the box")
    if review_count < 0:
        raise DessamError(f"--review-count {review_count}: use 0 or more masks")
    check_tiling(predictor.image_size, int(overlap))
    raise_on_errors(validate_coco(data_json, images_dir, decode=False, progress=False))
    dataset = load_coco(data_json, images_dir)
    raw = read_json(Path(data_json))
    found, items = {}, []
    for record in tqdm(dataset.images, desc="Labelling", unit="img", disable=not progress):
        if not len(record.boxes):
            continue
        masks = box_masks(predictor, read_record_image(record), record.boxes, use_token, overlap)
        for k, annotation_id in enumerate(record.annotation_ids):
            crop, origin = masks.instances.crops[k], masks.instances.origins[k]
            area = int(crop.sum())
            fraction, flags = mask_flags(crop, origin, record.boxes[k], outside_margin, outside_limit)
            rle = masks.instances.rle(k)
            found[annotation_id] = {"segmentation": rle, "area": area,
                                    "predicted_iou": round(float(masks.predicted_iou[k]), 4),
                                    "stability_score": round(float(masks.stability[k]), 4), "label_flags": flags}
            items.append(ReviewItem(record.path, record.file_name, record.id, annotation_id, record.boxes[k], rle, area,
                                    float(masks.predicted_iou[k]), float(masks.stability[k]), fraction, flags))
    annotations, crowd = [], 0
    for annotation in raw["annotations"]:
        annotation = dict(annotation)
        if annotation["id"] in found:
            annotation.update(found[annotation["id"]])
        elif annotation.get("iscrowd", 0):
            crowd += 1
        else:  # a zero-size box: nothing to prompt, but never dropped
            record = dataset.images[dataset.image_ids[annotation["image_id"]]]
            rle = mask_to_rle(np.zeros((record.height, record.width), dtype=bool))
            annotation.update(segmentation=rle, area=0, predicted_iou=0.0, stability_score=0.0, label_flags=["empty"])
            x, y, w, h = (float(v) for v in annotation["bbox"])
            items.append(ReviewItem(record.path, record.file_name, record.id, annotation["id"],
                                    np.array([x, y, x + max(w, 0), y + max(h, 0)]), rle, 0, 0.0, 0.0, 0.0, ["empty"]))
        annotations.append(annotation)
    review = write_review(review_dir, items, review_count) if review_dir is not None else None
    write_coco(out_json, raw["images"], annotations, raw.get("categories"))
    return LabelRun(Path(out_json), len(dataset.images), len(items), sum("empty" in i.flags for i in items),
                    sum("outside" in i.flags for i in items), crowd, review)
