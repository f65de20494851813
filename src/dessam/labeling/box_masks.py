"""Masks of given boxes, each with SAM's own measures of how sure it is.

Every box of an image is prompted once, through the inference pipeline's pieces
(`Predictor.prepare / encode / decode`, `instance_crop`): the image is encoded as `predict`
encodes it, brought to the model's scale the same way (`dessam.scale`): an image larger than the
model input at that scale is cut into the same overlapping windows as tiled prediction, and each
box is prompted in the window where it lies farthest from the window's inner edges (edges on the
image border do not count), so that SAM sees it whole whenever some window does.

Per mask:
- predicted IoU: SAM's IoU head for its first mask token (`DecodedMasks.iou`);
- stability score (SAM's): the IoU of the masks thresholded at the mask threshold plus and minus
  1 (in logits), i.e. how little the mask moves when the threshold does. The first lies inside
  the second, so it is the ratio of their areas (0 when both are empty).
Masks are cleaned (holes and islands) as `predict` cleans them; the scores are those of the raw
logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..data.transforms import resize_by
from ..inference.instances import Instances
from ..inference.masks import instance_crop
from ..inference.predictor import Predictor, as_rgb, best_windows, rescale_instances, whole_window
from ..inference.tiling import tile_windows
from ..postprocess import Postprocess, clean_crop

STABILITY_OFFSET = 1.0  # SAM's stability_score_offset


@dataclass
class BoxMasks:
    instances: Instances       # one per box, in the boxes' order (an empty mask is a 0 x 0 crop)
    predicted_iou: np.ndarray  # (N,)
    stability: np.ndarray      # (N,)


def box_masks(predictor: Predictor, image: np.ndarray, boxes: np.ndarray, use_token: bool = True,
              overlap: int = 64, postprocess: Optional[Postprocess] = None,
              pixel_size_um: Optional[float] = None,
              on_window: Optional[Callable[[int, int], None]] = None) -> BoxMasks:
    """The mask of each box (N, 4, x1y1x2y2 in the image's pixels) of `image`, with its scores.

    use_token: the trained student's token (False: the frozen teacher). postprocess: how masks
    are cleaned (default: the model's holes and islands; its score threshold plays no part).
    The image is brought to the model's scale as `predict` brings it (`dessam.scale`).
    on_window(done, total): called after each batch of the windows that hold boxes; an exception
    it raises stops the work there (a viewer's progress bar and Cancel).
    """
    image = as_rgb(image)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    height, width = image.shape[:2]
    tiled = predictor.needs_tiling(image, pixel_size_um)
    if not tiled and predictor.scale.mode == "fit":
        working = image  # fitted to the input by `prepare`
    else:
        factor = predictor.scale.factor(pixel_size_um)
        working = resize_by(image, factor) if factor != 1.0 else image
    windows = (tile_windows(working.shape[:2], predictor.image_size, overlap) if tiled
               else [whole_window(working.shape[:2])])
    scaled = boxes * np.array([working.shape[1] / width, working.shape[0] / height] * 2, dtype=np.float32)
    owner = best_windows(scaled, windows)
    crops, origins = [np.zeros((0, 0), bool)] * len(boxes), np.zeros((len(boxes), 2), np.int64)
    iou, stability = np.zeros(len(boxes)), np.zeros(len(boxes))
    threshold = predictor.config.model.mask_threshold
    used = [index for index in range(len(windows)) if (owner == index).any()]
    for start in range(0, len(used), predictor.settings.batch_size):
        batch = [windows[index] for index in used[start:start + predictor.settings.batch_size]]
        members = [np.flatnonzero(owner == index) for index in used[start:start + len(batch)]]
        inputs = predictor.prepare([working[window.rows, window.cols] for window in batch])
        prompts = [np.clip(scaled[m] - [w.x0, w.y0, w.x0, w.y0], 0, [w.x1 - w.x0, w.y1 - w.y0] * 2)
                   for w, m in zip(batch, members)]
        flat = np.concatenate(members)
        for indices, owners, decoded in predictor.decode(predictor.encode(inputs), inputs, prompts, use_token):
            for position, (index, number) in enumerate(zip(indices, owners)):
                logits, origin = decoded.logits[position, 0], tuple(decoded.origins[position].tolist())
                crop, y0, x0 = instance_crop(logits, origin, decoded.frame, inputs[number], threshold)
                strict, loose = (instance_crop(logits, origin, decoded.frame, inputs[number], limit)[0].sum()
                                 for limit in (threshold + STABILITY_OFFSET, threshold - STABILITY_OFFSET))
                box = flat[index]
                crops[box], origins[box] = crop, (y0 + batch[number].y0, x0 + batch[number].x0)
                iou[box] = float(decoded.iou[position, 0])
                stability[box] = strict / loose if loose else 0.0
        if on_window is not None:
            on_window(start + len(batch), len(used))
    found = Instances(scaled, iou, crops, origins, working.shape[:2])
    if working.shape[:2] != (height, width):
        found = rescale_instances(found, (height, width))
    postprocess = postprocess or predictor.postprocess_settings(score_threshold=None)
    cleaned = [clean_crop(crop, *origin, (height, width), postprocess)
               for crop, origin in zip(found.crops, found.origins)]
    instances = Instances(boxes, iou, [c[0] for c in cleaned], [c[1:] for c in cleaned], (height, width))
    return BoxMasks(instances, iou, stability)
