"""The official DES-SAM post-processing and conversions between masks and label maps.

Before scoring, the authors drop detections under the score threshold (0.55), fill holes and
remove islands smaller than 70 px in every mask, and paint one instance label map in which
overlaps go to the higher-scoring nucleus.

Connected components use 4-connectivity (pixels sharing an edge), for islands and holes alike,
as scikit-image's `remove_small_objects` / `remove_small_holes` do by default. A hole is a
background region enclosed by the mask; background cut off only by the image border is not.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SCORE_THRESHOLD = 0.55
MIN_SIZE = 70


def _drop_small_components(mask: np.ndarray, min_size: int) -> np.ndarray:
    """`mask` without its 4-connected components of fewer than `min_size` pixels."""
    components, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(components.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[components]


def _fill_small_holes(mask: np.ndarray, min_size: int) -> np.ndarray:
    """`mask` with enclosed background regions of fewer than `min_size` pixels filled.

    `mask` must be framed by a row/column of background on every side, so that the
    background outside the object is one region touching the frame.
    """
    holes, count = ndimage.label(~mask)
    if count == 0:
        return mask
    sizes = np.bincount(holes.ravel())
    fill = sizes < min_size
    fill[0] = False
    fill[holes[0, 0]] = False  # the outside (the frame is background)
    return mask | fill[holes]


def _clean_one(mask: np.ndarray, min_size: int, remove_holes: bool, remove_islands: bool) -> np.ndarray:
    """Clean one mask, working on its bounding box framed by one pixel of background."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return mask
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.pad(mask[y0:y1, x0:x1], 1)
    if remove_holes:
        crop = _fill_small_holes(crop, min_size)
    if remove_islands:
        crop = _drop_small_components(crop, min_size)
    out = np.zeros_like(mask)
    out[y0:y1, x0:x1] = crop[1:-1, 1:-1]
    return out


def clean_masks(
    masks: np.ndarray,
    scores: np.ndarray,
    score_threshold: float | None = SCORE_THRESHOLD,
    min_size: int = MIN_SIZE,
    remove_holes: bool = True,
    remove_islands: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply the official post-processing to a stack of instance masks.

    Drops detections scoring below `score_threshold` (None keeps all), fills holes of fewer
    than `min_size` pixels, removes islands of fewer than `min_size` pixels, and drops masks
    left empty. Returns `(masks, scores, keep_index)` where `keep_index` holds the positions
    of the kept instances in the input, in input order.
    """
    masks = np.asarray(masks, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if masks.ndim != 3 or masks.shape[0] != scores.shape[0]:
        raise ValueError(f"clean_masks needs masks (N, H, W) and N scores; got {masks.shape} and {scores.shape}")
    keep = np.arange(masks.shape[0])
    if score_threshold is not None:
        keep = keep[scores >= score_threshold]
    cleaned = np.zeros((keep.size,) + masks.shape[1:], dtype=bool)
    for row, index in enumerate(keep):
        cleaned[row] = _clean_one(masks[index], min_size, remove_holes, remove_islands)
    nonempty = cleaned.any(axis=(1, 2))
    keep = keep[nonempty]
    return cleaned[nonempty], scores[keep], keep


def label_dtype(max_id: int) -> np.dtype:
    """uint16 while the ids fit, uint32 past 65535 instances."""
    return np.dtype(np.uint16) if max_id <= np.iinfo(np.uint16).max else np.dtype(np.uint32)


def score_order(scores: np.ndarray) -> np.ndarray:
    """Instance indices from the highest score to the lowest (ties keep input order).

    Label id `k` painted by `masks_to_labels` is instance `score_order(scores)[k - 1]`, so its
    score is `scores[score_order(scores)][k - 1]`.
    """
    return np.argsort(-np.asarray(scores, dtype=np.float64).reshape(-1), kind="stable")


def masks_to_labels(masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Paint instance masks into one label map; where masks overlap, the higher score wins.

    Ids run 1..N in descending score order (see `score_order`); 0 is background. The dtype is
    uint16, or uint32 past 65535 instances. A mask entirely covered by higher-scoring masks
    (or an empty mask) does not appear in the label map, so some ids may be missing.
    """
    masks = np.asarray(masks, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if masks.ndim != 3 or masks.shape[0] != scores.shape[0]:
        raise ValueError(f"masks_to_labels needs masks (N, H, W) and N scores; got {masks.shape} and {scores.shape}")
    order = score_order(scores)
    labels = np.zeros(masks.shape[1:], dtype=label_dtype(masks.shape[0]))
    # Paint from the lowest score to the highest so that the highest ends on top.
    for rank in range(order.size, 0, -1):
        labels[masks[order[rank - 1]]] = rank
    return labels


def labels_to_masks(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a label map into boolean masks (N, H, W), one per id present, with the ids."""
    labels = np.asarray(labels)
    ids = np.unique(labels)
    ids = ids[ids != 0]
    masks = labels[None, :, :] == ids[:, None, None]
    return masks, ids
