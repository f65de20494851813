"""A new image's typical nucleus size, for models with `nucleus` scaling (`dessam.geometry.scale`).

The model's nucleus-size head (`dessam.models.size_head`) reads crops of the image at its own
resolution: the whole image when it is small, else up to `MAX_CROPS` crops of `ESTIMATE_CROP` pixels (fewer
for a ViT of a smaller input)
spread over it (the crops of a large field are alike; the median of their estimates is the image's).
An estimate is kept within the sizes the head was trained on (`SIZE_RANGE`). Given a size
(`--nucleus-size`), nothing is estimated.

The head alone errs by a quarter to a half on some stains (it read DSB 2018's fluorescence 1.5x too
large), and a wrong size costs many nuclei. So the estimate is then corrected by the detector
(`model.nucleus_refinements` passes): the image is detected at the estimated size, and the median side
of the nuclei found (`detected_side`) becomes the new estimate, until it moves by less than
`REFINE_TOLERANCE`. The detector finds nuclei from about half to twice the size it was trained at, so a
pass at a wrong size still measures them, if not all of them. A model whose head was never trained (a model trained
from random weights on its own boxes) takes its training set's typical resampling.

The crops and the reading of the head's output are numpy, shared by both engines: the PyTorch
`Predictor` runs the encoder and head itself, the ONNX engine its exported size graph.
"""

from __future__ import annotations

import numpy as np

from ..geometry.inputs import prepare_image
from ..geometry.scale import SIZE_RANGE, estimate_crop, median_box_side

MAX_CROPS = 4
REFINE_TOLERANCE = 1.05   # a refined size within this factor of the last one ends the refinement
MIN_DETECTED = 5          # fewer nuclei found than this say nothing about their size


def estimation_crops(image: np.ndarray, fixed_side: int = 0, count: int = MAX_CROPS) -> list:
    """Up to `count` crops of `estimate_crop(fixed_side)` pixels spread evenly over `image` (the image itself
    when smaller)."""
    crop = estimate_crop(fixed_side)
    height, width = image.shape[:2]
    if height <= crop and width <= crop:
        return [image]
    rows = 1 if height <= crop else 2
    cols = 1 if width <= crop else max(1, count // rows)
    tops = np.linspace(0, max(height - crop, 0), rows + 2)[1:-1].astype(int) if rows > 1 else [max((height - crop) // 2, 0)]
    lefts = np.linspace(0, max(width - crop, 0), cols + 2)[1:-1].astype(int) if cols > 1 else [max((width - crop) // 2, 0)]
    return [image[top:top + crop, left:left + crop] for top in tops for left in lefts][:count]


def crop_inputs(crops: list, side: int) -> tuple:
    """(crops SAM-normalised and zero-padded to `side` x `side`, (B, 3, side, side) float32; the height and
    width of each crop inside, (B, 2) float32)."""
    batch = np.stack([prepare_image(crop, side, fit=False).normalised for crop in crops])
    return batch, np.float32([crop.shape[:2] for crop in crops])


def padded_side(crops: list, fixed: int = 0) -> int:
    """The side the crops are padded to: `fixed` (an encoder of one input size, a ViT), else the next
    multiple of 16 of the largest crop (a fully convolutional one)."""
    return int(fixed) if fixed else -(-max(max(crop.shape[:2]) for crop in crops) // 16) * 16


def nucleus_side(log_sides: np.ndarray) -> float:
    """The image's typical nucleus side from the head's log sides of its crops, within `SIZE_RANGE`."""
    return float(np.clip(np.median(np.exp(np.asarray(log_sides, np.float64))), *SIZE_RANGE))


def detected_side(boxes: np.ndarray) -> "float | None":
    """The median side, sqrt(w x h), of detected `boxes` (N, 4) within `SIZE_RANGE`; None when fewer than
    `MIN_DETECTED`."""
    side = median_box_side(boxes, at_least=MIN_DETECTED)
    return None if side is None else float(np.clip(side, *SIZE_RANGE))


def settled(previous: float, refined: float) -> bool:
    """True when a refined size is within `REFINE_TOLERANCE` of the one it was measured at."""
    return abs(np.log(refined / previous)) <= np.log(REFINE_TOLERANCE)
