"""The instances of one image, each held as its box, its score and a boolean crop of its mask.

A mask never travels as a full-size array: `crops[k]` covers rows `origins[k, 0]` to
`origins[k, 0] + crops[k].shape[0]` and the matching columns of an image of `shape`. Memory then
grows with the nuclei's own size, not with nuclei x image area.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data.coco import crop_to_rle
from ..postprocess import Postprocess, clean_crop, label_dtype, paint_ranks, score_order, tight


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
        """Score threshold, holes and islands (see `dessam.postprocess`), then masks left empty
        dropped; the order is kept."""
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
        return Instances(self.boxes[kept], self.scores[kept], crops, origins, self.shape)

    def paint(self, overlap_winner: str = "lower-score") -> np.ndarray:
        """One label map: id k is instance k - 1, so the instances must be in descending score order
        (`by_score`); overlaps go to `overlap_winner` (see `dessam.postprocess.masks_to_labels`)."""
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
