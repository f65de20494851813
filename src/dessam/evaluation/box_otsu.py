"""The cheapest honest way to draw a nucleus inside its box: Otsu on the nucleus stain.

Per box: the haematoxylin (nuclear stain) channel of a colour deconvolution (`skimage.color.rgb2hed`,
Ruifrok and Johnston's H&E-DAB vectors: Papanicolaou's haematoxylin stains nuclei the same way), an
Otsu threshold of its values inside the box, the largest connected piece above it, holes filled.
`dessam eval --baselines` scores it beside the learned masks, from the same boxes, so that a user
sees what the learned parts add.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.color import rgb2hed
from skimage.filters import threshold_otsu

from ..inference.instances import Instances


def box_otsu_mask(stain: np.ndarray) -> np.ndarray:
    """The nucleus in one box's stain values (h, w): above Otsu's threshold, largest piece, filled."""
    if stain.size < 4 or np.ptp(stain) <= 0:
        return np.ones(stain.shape, dtype=bool)
    foreground = stain > threshold_otsu(stain)
    pieces, count = ndimage.label(foreground)
    if count > 1:
        sizes = np.bincount(pieces.ravel())
        sizes[0] = 0
        foreground = pieces == int(np.argmax(sizes))
    return ndimage.binary_fill_holes(foreground)


def box_otsu_instances(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> Instances:
    """`box_otsu_mask` inside every box (x1y1x2y2, image pixels) of an RGB uint8 image."""
    filled = Instances.from_boxes(boxes, scores, image.shape[:2])
    if not len(filled):
        return filled
    stain = rgb2hed(image)[..., 0]
    crops = []
    for crop, (y0, x0) in zip(filled.crops, filled.origins):
        h, w = crop.shape
        crops.append(box_otsu_mask(stain[y0:y0 + h, x0:x0 + w]) if h and w else crop)
    return Instances(filled.boxes, filled.scores, crops, filled.origins, filled.shape)
