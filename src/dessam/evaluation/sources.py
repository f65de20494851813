"""Where the masks of each row of `dessam eval` come from: mask sources read from one encoding and
one detection per window (`dessam.inference.windowed.MaskSource`).

- `box-as-mask`: every box filled: what the detector alone gives;
- `box-otsu`: Otsu on the nucleus stain inside every box (`dessam.evaluation.box_otsu`);
- `sam`: training-free SAM (the frozen teacher) prompted with the boxes, without the learned token;
- `des-sam`: the student, prompted with the boxes and the learned token;

each from the detected boxes, and each again from the ground-truth boxes (scores 1), where the
detector plays no part: `box-as-mask-gt-boxes`, `box-otsu-gt-boxes`, `teacher-gt-boxes` (the
pseudo-label ceiling) and `des-sam-gt-boxes`.
"""

from __future__ import annotations

from typing import Optional

from ..inference.pipeline import STUDENT, filled_boxes as box_as_mask, student_masks
from ..inference.windowed import MaskSource
from .box_otsu import box_otsu_instances


def box_otsu(predictor, encoded, images: list, boxes: list, scores: list, n_images: Optional[int] = None) -> list:
    """Otsu on the nucleus stain inside each box."""
    return [box_otsu_instances(image, b, s) for image, b, s in zip(images, boxes, scores)]


def sam_masks(predictor, encoded, images: list, boxes: list, scores: list, n_images: Optional[int] = None) -> list:
    """SAM's decoder prompted with the boxes, without the learned token: the frozen teacher."""
    return predictor.segment(encoded, boxes, scores, use_token=False, n_images=n_images)


# The report's rows, in their order: from the detected boxes, then from the ground-truth boxes.
METHODS = {
    "box-as-mask": MaskSource(box_as_mask),
    "box-otsu": MaskSource(box_otsu),
    "sam": MaskSource(sam_masks),
    STUDENT: MaskSource(student_masks),
    "box-as-mask-gt-boxes": MaskSource(box_as_mask, given_boxes=True),
    "box-otsu-gt-boxes": MaskSource(box_otsu, given_boxes=True),
    "teacher-gt-boxes": MaskSource(sam_masks, given_boxes=True),
    STUDENT + "-gt-boxes": MaskSource(student_masks, given_boxes=True),
}
