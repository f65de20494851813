"""Masks of given boxes, each with SAM's own measures of how sure it is.

Every box of an image is prompted once, through the inference pipeline's pieces
(the engine's `encode` and `decode`, `instance_crop`): the image is encoded as `predict` encodes it,
brought to the model's scale the same way (its `WindowPlan`): an image larger than the model input
at that scale is cut into the same overlapping windows as tiled prediction, and each box is
prompted in the window where it lies farthest from the window's inner edges (edges on the image
border do not count), so that SAM sees it whole whenever some window does.

Per mask:
- predicted IoU: SAM's IoU head for its first mask token (`DecodedMasks.iou`);
- stability score (SAM's): the IoU of the masks thresholded at the mask threshold plus and minus
  1 (in logits), i.e. how little the mask moves when the threshold does. The first lies inside
  the second, so it is the ratio of their areas (0 when both are empty).
Masks are cleaned (holes and islands) as `predict` cleans them; the scores are those of the raw
logits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional

import numpy as np

from ..config import Postprocess
from ..geometry.inputs import as_rgb
from ..geometry.scale import median_box_side
from .instances import Instances, clean_crop, rescale_instances
from .masks import instance_crop
from .windowed import run_windows, window_reader

STABILITY_OFFSET = 1.0  # SAM's stability_score_offset


@dataclass
class BoxMasks:
    instances: Instances       # one per box, in the boxes' order (an empty mask is a 0 x 0 crop)
    predicted_iou: np.ndarray  # (N,)
    stability: np.ndarray      # (N,)


def box_masks(predictor, image: np.ndarray, boxes: np.ndarray, use_token: bool = True,
              overlap: int = 64, postprocess: Optional[Postprocess] = None,
              pixel_size_um: Optional[float] = None,
              on_window: Optional[Callable[[int, int], None]] = None) -> BoxMasks:
    """The mask of each box (N, 4, x1y1x2y2 in the image's pixels) of `image`, with its scores.

    use_token: the trained student's token (False: the frozen teacher). postprocess: how masks
    are cleaned (default: the model's holes and islands; its score threshold plays no part).
    The image is brought to the model's scale as `predict` brings it (`dessam.geometry.plan`).
    on_window(done, total): called after each batch of the windows that hold boxes; an exception
    it raises stops the work there (a viewer's progress bar and Cancel).
    """
    image = as_rgb(image)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    height, width = image.shape[:2]
    # with `nucleus` scaling the boxes say how large the nuclei are, when there are enough of them
    plan = predictor.plan(image, pixel_size_um, overlap=overlap, nucleus_size=median_box_side(boxes))
    working = plan.working(image)  # when fitted, the image itself: fitted to the input by `encode`
    scaled = plan.to_working(boxes)
    owner = plan.owners(scaled)
    threshold = predictor.config.model.postprocess.mask_threshold
    used = [index for index in range(len(plan.windows)) if (owner == index).any()]

    def batch_masks(chosen: list, images: list) -> list:
        """Per window of the batch, (box index, crop, origin in the working image, IoU, stability) of its boxes."""
        batch = [plan.windows[index] for index in chosen]
        members = [np.flatnonzero(owner == index) for index in chosen]
        encoded = predictor.encode(images)
        prompts = [np.clip(scaled[m] - [w.x0, w.y0, w.x0, w.y0], 0, [w.x1 - w.x0, w.y1 - w.y0] * 2)
                   for w, m in zip(batch, members)]
        flat = np.concatenate(members)
        per_window = [[] for _ in chosen]
        for decoded in predictor.decode(encoded, prompts, use_token):
            for position, (index, number) in enumerate(zip(decoded.indices, decoded.owners)):
                logits, origin = decoded.logits[position, 0], tuple(decoded.origins[position].tolist())
                item = encoded.inputs[number]
                crop, y0, x0 = instance_crop(logits, origin, decoded.frame, item, threshold)
                strict, loose = (instance_crop(logits, origin, decoded.frame, item, limit)[0].sum()
                                 for limit in (threshold + STABILITY_OFFSET, threshold - STABILITY_OFFSET))
                per_window[number].append((flat[index], crop, (y0 + batch[number].y0, x0 + batch[number].x0),
                                           float(decoded.iou[position, 0]), strict / loose if loose else 0.0))
        return per_window

    crops, origins = [np.zeros((0, 0), bool)] * len(boxes), np.zeros((len(boxes), 2), np.int64)
    iou, stability = np.zeros(len(boxes)), np.zeros(len(boxes))
    for _, results in run_windows(plan, predictor.settings.batch_size, window_reader(plan, working),
                                  batch_masks, used, on_window):
        for box, crop, origin, box_iou, box_stability in results:
            crops[box], origins[box], iou[box], stability[box] = crop, origin, box_iou, box_stability
    found = Instances(scaled, iou, crops, origins, plan.shape)
    if plan.shape != (height, width):
        found = rescale_instances(found, (height, width))
    postprocess = postprocess or replace(predictor.postprocess, score_threshold=None)
    cleaned = [clean_crop(crop, *origin, (height, width), postprocess)
               for crop, origin in zip(found.crops, found.origins)]
    instances = Instances(boxes, iou, [c[0] for c in cleaned], [c[1:] for c in cleaned], (height, width))
    return BoxMasks(instances, iou, stability)
