"""The official DES-SAM post-processing and conversions between masks and label maps.

Before scoring, the authors (`mmdet/evaluation/metrics/nuclei_metric.py`, which calls SAM's own
`remove_small_regions`) drop detections under the score threshold (0.55), then per mask:

1. holes: every 8-connected background piece of fewer than 70 px is filled, including pieces that
   the image border cuts off (they are background pieces like any other);
2. islands: every 8-connected piece of the mask of fewer than 70 px is removed; when all pieces
   are that small, the largest one is kept;

and paint one instance label map in descending score order, so that where masks overlap the
*lower*-scoring one, painted later, wins. `Postprocess` holds these choices; each can be changed
(4-connectivity, border pieces kept as background, masks left empty dropped, the higher score
winning), and docs/fidelity.md says what each changes.

Masks are processed on their bounding box plus a one-pixel frame, never on the whole image, and
give the same result as processing the whole image would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import ndimage

from .errors import DessamError

SCORE_THRESHOLD = 0.55
MIN_SIZE = 70
OVERLAP_WINNERS = ("lower-score", "higher-score")


@dataclass
class Postprocess:
    """How raw instance masks become the label map that is scored and written."""

    score_threshold: Optional[float] = SCORE_THRESHOLD  # None keeps every detection
    max_detections: int = 120          # the detector keeps at most this many boxes per image (or window)
    min_size: int = MIN_SIZE           # holes and islands under this many pixels
    remove_holes: bool = True
    remove_islands: bool = True
    connectivity: int = 8              # 8 (official, OpenCV's) or 4
    fill_border_holes: bool = True     # official: pieces cut off by the image border are filled too
    keep_largest_island: bool = True   # official: a mask made only of small islands keeps its largest
    overlap_winner: str = "lower-score"  # official: lower-scoring masks are painted over higher ones

    def __post_init__(self):
        if self.connectivity not in (4, 8):
            raise ValueError(f"connectivity must be 4 or 8, got {self.connectivity}")
        if self.overlap_winner not in OVERLAP_WINNERS:
            raise ValueError(f"overlap_winner must be one of {', '.join(OVERLAP_WINNERS)}, got {self.overlap_winner!r}")
        if self.score_threshold is not None and not 0 <= self.score_threshold <= 1:
            raise DessamError(f"score threshold {self.score_threshold}: use a value between 0 and 1 (0 keeps every detection)")
        if int(self.max_detections) < 1:
            raise DessamError(f"max detections {self.max_detections}: keep at least 1 detection per image")
        if int(self.min_size) < 0:
            raise DessamError(f"minimum size {self.min_size}: use 0 or a positive number of pixels")

    @classmethod
    def from_model_config(cls, model_config, **overrides) -> "Postprocess":
        """The post-processing a model's config asks for (`overrides` replace single values)."""
        values = dict(
            score_threshold=model_config.score_threshold,
            max_detections=model_config.max_detections,
            min_size=model_config.min_object_size,
            connectivity=model_config.connectivity,
            fill_border_holes=model_config.fill_border_holes,
            keep_largest_island=model_config.keep_largest_island,
            overlap_winner=model_config.overlap_winner,
        )
        values.update(overrides)
        return cls(**values)


def _structure(connectivity: int) -> np.ndarray:
    return ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)


def _fill_small_holes(crop: np.ndarray, outside: np.ndarray, extra_outside: int, on_border: np.ndarray,
                      settings: Postprocess) -> np.ndarray:
    """`crop` with its background pieces under `min_size` pixels filled.

    outside: bool, the crop's pixels that continue beyond the crop (its frame), whose piece has
    `extra_outside` more pixels there; on_border: bool, the crop's pixels on the image border.
    """
    holes, count = ndimage.label(~crop, _structure(settings.connectivity))
    if count == 0:
        return crop
    sizes = np.bincount(holes.ravel()).astype(np.int64)
    sizes[np.unique(holes[outside])] += extra_outside
    fill = sizes < settings.min_size
    fill[0] = False
    if not settings.fill_border_holes:
        fill[np.unique(holes[on_border])] = False
    return crop | fill[holes]


def _drop_small_islands(crop: np.ndarray, settings: Postprocess) -> np.ndarray:
    """`crop` without its pieces under `min_size` pixels (the largest stays if all are small and
    `keep_largest_island`)."""
    islands, count = ndimage.label(crop, _structure(settings.connectivity))
    if count == 0:
        return crop
    sizes = np.bincount(islands.ravel())
    sizes[0] = 0
    keep = sizes >= settings.min_size
    keep[0] = False
    if not keep.any() and settings.keep_largest_island:
        keep[int(np.argmax(sizes))] = True
    return keep[islands]


def tight(crop: np.ndarray, y0: int, x0: int) -> tuple:
    """(crop, y0, x0) cut to the crop's own bounding box; an empty crop comes back 0 x 0."""
    rows = np.flatnonzero(crop.any(axis=1))
    if rows.size == 0:
        return crop[:0, :0], y0, x0
    cols = np.flatnonzero(crop.any(axis=0))
    return crop[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], y0 + int(rows[0]), x0 + int(cols[0])


def clean_crop(crop: np.ndarray, y0: int, x0: int, shape: tuple, settings: Postprocess) -> tuple:
    """Clean one mask given as a crop at (y0, x0) of an image of `shape`; returns (crop, y0, x0),
    cut to the cleaned mask's bounding box (0 x 0 when nothing is left).

    The work is done on the mask's bounding box plus a one-pixel frame (where the frame lies inside
    the image). The frame is background joined to all the background outside the box, so the piece
    it belongs to counts as large as it is on the whole image. When the box spans the whole height
    or width the background outside it may fall apart: then the whole image is used.
    """
    crop, y0, x0 = tight(np.asarray(crop, dtype=bool), y0, x0)
    if not crop.size:
        return crop, y0, x0
    height, width = shape
    y1, x1 = y0 + crop.shape[0], x0 + crop.shape[1]
    if (y0 == 0 and y1 == height) or (x0 == 0 and x1 == width):
        cy0, cy1, cx0, cx1 = 0, height, 0, width
    else:
        cy0, cy1, cx0, cx1 = max(y0 - 1, 0), min(y1 + 1, height), max(x0 - 1, 0), min(x1 + 1, width)
    work = np.zeros((cy1 - cy0, cx1 - cx0), dtype=bool)
    work[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0] = crop
    if settings.remove_holes:
        outside = np.ones(work.shape, dtype=bool)
        outside[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0] = False
        on_border = np.zeros(work.shape, dtype=bool)
        on_border[0, :] |= cy0 == 0
        on_border[-1, :] |= cy1 == height
        on_border[:, 0] |= cx0 == 0
        on_border[:, -1] |= cx1 == width
        work = _fill_small_holes(work, outside, height * width - work.size, on_border, settings)
    if settings.remove_islands:
        work = _drop_small_islands(work, settings)
    return tight(work, cy0, cx0)


def clean_masks(
    masks: np.ndarray,
    scores: np.ndarray,
    score_threshold: Optional[float] = SCORE_THRESHOLD,
    min_size: int = MIN_SIZE,
    remove_holes: bool = True,
    remove_islands: bool = True,
    settings: Optional[Postprocess] = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply the official post-processing to a stack of instance masks.

    Drops detections scoring below the score threshold (None keeps all), fills holes and removes
    islands of fewer than `min_size` pixels, and drops masks left empty. `settings` (a
    `Postprocess`) replaces the keyword values. Returns `(masks, scores, keep_index)` where
    `keep_index` holds the positions of the kept instances in the input, in input order.
    """
    if settings is None:
        settings = Postprocess(score_threshold=score_threshold, min_size=min_size, remove_holes=remove_holes,
                               remove_islands=remove_islands)
    masks = np.asarray(masks, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if masks.ndim != 3 or masks.shape[0] != scores.shape[0]:
        raise ValueError(f"clean_masks needs masks (N, H, W) and N scores; got {masks.shape} and {scores.shape}")
    keep = np.arange(masks.shape[0])
    if settings.score_threshold is not None:
        keep = keep[scores >= settings.score_threshold]
    cleaned = np.zeros((keep.size,) + masks.shape[1:], dtype=bool)
    for row, index in enumerate(keep):
        crop, y0, x0 = clean_crop(masks[index], 0, 0, masks.shape[1:], settings)
        cleaned[row, y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
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


def paint_ranks(count: int, overlap_winner: str = "lower-score") -> range:
    """The ranks 1..count in the order to paint them so that `overlap_winner` ends on top: rank 1
    (the highest score) first for "lower-score", last for "higher-score"."""
    if overlap_winner not in OVERLAP_WINNERS:
        raise ValueError(f"overlap_winner must be one of {', '.join(OVERLAP_WINNERS)}, got {overlap_winner!r}")
    return range(1, count + 1) if overlap_winner == "lower-score" else range(count, 0, -1)


def masks_to_labels(masks: np.ndarray, scores: np.ndarray, overlap_winner: str = "lower-score") -> np.ndarray:
    """Paint instance masks into one label map.

    Ids run 1..N in descending score order (see `score_order`); 0 is background. Where masks
    overlap, the lower score wins (the authors' order: painted from the highest score down) or,
    with `overlap_winner="higher-score"`, the higher. The dtype is uint16, or uint32 past 65535
    instances. A mask entirely painted over (or an empty mask) does not appear in the label map,
    so some ids may be missing.
    """
    masks = np.asarray(masks, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if masks.ndim != 3 or masks.shape[0] != scores.shape[0]:
        raise ValueError(f"masks_to_labels needs masks (N, H, W) and N scores; got {masks.shape} and {scores.shape}")
    order = score_order(scores)
    labels = np.zeros(masks.shape[1:], dtype=label_dtype(masks.shape[0]))
    for rank in paint_ranks(order.size, overlap_winner):
        labels[masks[order[rank - 1]]] = rank
    return labels


def labels_to_masks(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a label map into boolean masks (N, H, W), one per id present, with the ids."""
    labels = np.asarray(labels)
    ids = np.unique(labels)
    ids = ids[ids != 0]
    masks = labels[None, :, :] == ids[:, None, None]
    return masks, ids
