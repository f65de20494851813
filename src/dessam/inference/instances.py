"""The instances of one image, each held as its box, its score and a boolean crop of its mask, and
the official DES-SAM post-processing that turns them into a label map.

A mask never travels as a full-size array: `crops[k]` covers rows `origins[k, 0]` to
`origins[k, 0] + crops[k].shape[0]` and the matching columns of an image of `shape`. Memory then
grows with the nuclei's own size, not with nuclei x image area.

Post-processing: before scoring, the authors (`mmdet/evaluation/metrics/nuclei_metric.py`, which
calls SAM's own `remove_small_regions`) drop detections under the score threshold (0.55), then per mask:

1. holes: every 8-connected background piece of fewer than 70 px is filled, including pieces that
   the image border cuts off (they are background pieces like any other);
2. islands: every 8-connected piece of the mask of fewer than 70 px is removed; when all pieces
   are that small, the largest one is kept;

and paint one instance label map in descending score order, so that where masks overlap the
*lower*-scoring one, painted later, wins. `dessam.config.Postprocess` holds these choices; each can
be changed (4-connectivity, border pieces kept as background, masks left empty dropped, the higher
score winning), and docs/fidelity.md says what each changes.

Masks are processed on their bounding box plus a one-pixel frame, never on the whole image, and
give the same result as processing the whole image would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy import ndimage

from ..config import Postprocess, choices
from ..data.coco import crop_to_rle
from ..geometry.mapping import rescale_crop, tight

SCORE_THRESHOLD = Postprocess.score_threshold
MIN_SIZE = Postprocess.min_size
OVERLAP_WINNERS = choices(Postprocess, "overlap_winner")


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
    cleaned, keep = Instances.from_masks(np.zeros((len(scores), 4)), scores, masks).postprocessed_with_index(settings)
    full = np.stack([cleaned.mask(k) for k in range(len(cleaned))]) if len(cleaned) else np.zeros((0,) + masks.shape[1:], bool)
    return full, cleaned.scores, keep


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
    return Instances.from_masks(np.zeros((len(scores), 4)), scores, masks).by_score().paint(overlap_winner)


def labels_to_masks(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a label map into boolean masks (N, H, W), one per id present, with the ids."""
    labels = np.asarray(labels)
    ids = np.unique(labels)
    ids = ids[ids != 0]
    masks = labels[None, :, :] == ids[:, None, None]
    return masks, ids


@dataclass
class Instances:
    boxes: np.ndarray                        # (N, 4) float32 x1y1x2y2 in image pixels
    scores: np.ndarray                       # (N,) float64
    crops: list = field(default_factory=list)  # N bool arrays
    origins: np.ndarray = None               # (N, 2) int64 row, column of each crop
    shape: tuple = (0, 0)                    # (H, W) of the image

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.origins = np.zeros((0, 2), np.int64) if self.origins is None else np.asarray(self.origins, np.int64).reshape(-1, 2)
        self.shape = tuple(int(v) for v in self.shape)
        if not (len(self.boxes) == len(self.scores) == len(self.crops) == len(self.origins)):
            raise ValueError(f"{len(self.boxes)} boxes, {len(self.scores)} scores, {len(self.crops)} crops and "
                             f"{len(self.origins)} origins: one of each per instance")

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls, shape: tuple) -> "Instances":
        return cls(np.zeros((0, 4)), np.zeros(0), [], None, shape)

    @classmethod
    def from_masks(cls, boxes, scores, masks: np.ndarray) -> "Instances":
        """From full-size masks (N, H, W): each cut to its own bounding box."""
        masks = np.asarray(masks, dtype=bool)
        pieces = [tight(mask, 0, 0) for mask in masks]
        return cls(boxes, scores, [p[0] for p in pieces], [p[1:] for p in pieces], masks.shape[1:])

    @classmethod
    def from_boxes(cls, boxes, scores, shape: tuple) -> "Instances":
        """Each box filled: pixel (r, c) covers [c, c+1] x [r, r+1] and belongs to a box that holds
        its centre."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        height, width = shape
        first = np.clip(np.ceil(boxes[:, :2] - 0.5).astype(np.int64), 0, [width, height])
        last = np.clip(np.floor(boxes[:, 2:] - 0.5).astype(np.int64) + 1, 0, [width, height])
        size = np.maximum(last - first, 0)
        crops = [np.ones((h, w), dtype=bool) for w, h in size]
        return cls(boxes, scores, crops, first[:, ::-1], shape)

    def subset(self, index) -> "Instances":
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        return Instances(self.boxes[index], self.scores[index], [self.crops[i] for i in index], self.origins[index],
                         self.shape)

    def by_score(self) -> "Instances":
        """The same instances from the highest score to the lowest (ties keep their order)."""
        return self.subset(score_order(self.scores))

    def mask(self, k: int) -> np.ndarray:
        """Instance `k` as a full-size bool mask (H x W: use for one instance at a time)."""
        out = np.zeros(self.shape, dtype=bool)
        (y0, x0), crop = self.origins[k], self.crops[k]
        out[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
        return out

    def areas(self) -> np.ndarray:
        return np.array([int(crop.sum()) for crop in self.crops], dtype=np.int64)

    def postprocessed(self, settings: Postprocess) -> "Instances":
        """Score threshold, holes and islands (see the module docstring), then masks left empty
        dropped; the order is kept. The one place where dessam's results are cleaned: full-size
        masks (`clean_masks`) and a slide's streamed rows (`dessam.inference.slide_stream`) come
        here too."""
        return self.postprocessed_with_index(settings)[0]

    def postprocessed_with_index(self, settings: Postprocess) -> tuple:
        """(`postprocessed(settings)`, the positions of the instances it kept, in order)."""
        keep = np.arange(len(self))
        if settings.score_threshold is not None:
            keep = keep[self.scores >= settings.score_threshold]
        crops, origins, kept = [], [], []
        for index in keep:
            crop, y0, x0 = clean_crop(self.crops[index], *self.origins[index], self.shape, settings)
            if crop.size and crop.any():
                crops.append(crop)
                origins.append((y0, x0))
                kept.append(index)
        kept = np.asarray(kept, dtype=np.int64)
        return Instances(self.boxes[kept], self.scores[kept], crops, origins, self.shape), kept

    def paint(self, overlap_winner: str = "lower-score") -> np.ndarray:
        """One label map: id k is instance k - 1, so the instances must be in descending score order
        (`by_score`); overlaps go to `overlap_winner` (see `masks_to_labels`)."""
        labels = np.zeros(self.shape, dtype=label_dtype(len(self)))
        for rank in paint_ranks(len(self), overlap_winner):
            (y0, x0), crop = self.origins[rank - 1], self.crops[rank - 1]
            labels[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]][crop] = rank
        return labels

    def rle(self, k: int) -> dict:
        """COCO RLE of instance `k` (counts as str), from its crop."""
        return crop_to_rle(self.crops[k], self.origins[k], self.shape)

    def shifted(self, dy: int, dx: int, shape: tuple) -> "Instances":
        """The same instances moved by (dy, dx) into an image of `shape` (a window's instances
        placed in the whole image)."""
        boxes = self.boxes + np.array([dx, dy, dx, dy], dtype=np.float32)
        return Instances(boxes, self.scores, self.crops, self.origins + [dy, dx], shape)


def mask_ious(first: Instances, second: Instances) -> np.ndarray:
    """IoU of corresponding instances of two `Instances` of one image (two empty masks count as 1)."""
    if len(first) != len(second):
        raise ValueError(f"different numbers of instances ({len(first)} vs {len(second)})")
    ious = np.ones(len(first))
    for k in range(len(first)):
        a, b = first.crops[k], second.crops[k]
        (ay, ax), (by, bx) = first.origins[k], second.origins[k]
        y0, x0 = min(ay, by), min(ax, bx)
        y1, x1 = max(ay + a.shape[0], by + b.shape[0]), max(ax + a.shape[1], bx + b.shape[1])
        canvas = np.zeros((2, max(y1 - y0, 0), max(x1 - x0, 0)), dtype=bool)
        canvas[0, ay - y0:ay - y0 + a.shape[0], ax - x0:ax - x0 + a.shape[1]] = a
        canvas[1, by - y0:by - y0 + b.shape[0], bx - x0:bx - x0 + b.shape[1]] = b
        union = (canvas[0] | canvas[1]).sum()
        if union:
            ious[k] = (canvas[0] & canvas[1]).sum() / union
    return ious


def rescale_instances(instances: Instances, shape: tuple) -> Instances:
    """Instances found on a resized image, brought back to the image's own `shape` the way PyTorch's
    nearest resizing of each whole mask would, computed only around each mask."""
    (in_h, in_w), (height, width) = instances.shape, shape
    pieces = [rescale_crop(crop, origin, instances.shape, shape) for crop, origin in zip(instances.crops, instances.origins)]
    factor = np.array([width / in_w, height / in_h] * 2, dtype=np.float32)
    return Instances(instances.boxes * factor, instances.scores, [p[0] for p in pieces], [p[1:] for p in pieces], shape)
