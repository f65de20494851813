"""Prediction on fields larger than one model input, by overlapping tiles.

The image is cut into `tile` x `tile` windows that overlap by at least `overlap` pixels (the
last row and column of windows sit flush with the image edge). Every window is predicted on
its own and the instances are mapped back to the image. A nucleus near a seam is seen by two
or more windows, possibly cut by a window edge in some of them; the merge keeps one copy:

1. each instance gets a *margin*: its distance to the nearest window edge that lies inside the
   image (edges on the image border do not count, so instances there are not "cut");
2. instances are taken from the largest margin down (whole, central copies first, copies cut
   by a window edge last), and one is dropped when it duplicates an instance already kept from
   another window: they share more than half of the smaller one's pixels.

So each nucleus comes from the window in which it lies farthest from the window border, and a
copy cut at an inner edge survives only when no window saw the nucleus whole. Instances of the
same window never suppress each other (that is the predictor's own business). This works when
`overlap` exceeds the largest nucleus diameter: then every nucleus is whole in some window.

Memory: instances are kept as crops (their mask's bounding box), plus one H x W uint32 map of
the kept instances. `predict_tiled` finally expands the masks to N x H x W booleans (N * H * W
bytes); `predict_tiled_labels` returns a single H x W label map instead, for large fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from tqdm import tqdm

from ..errors import DessamError
from ..postprocess import label_dtype, paint_ranks, score_order

PredictFn = Callable[[np.ndarray], tuple]


@dataclass
class _Instance:
    window: int
    box: np.ndarray  # x1, y1, x2, y2 in image pixels, as predicted
    score: float
    y0: int  # the mask crop covers rows y0..y0+h and columns x0..x0+w of the image
    x0: int
    mask: np.ndarray  # bool crop (h, w)
    margin: float


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Window start positions along one axis: step `tile - overlap`, the last flush with the end."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def _check_settings(tile: int, overlap: int) -> None:
    if tile < 1:
        raise DessamError(f"the tile size must be a positive number of pixels; got {tile}")
    if not 0 <= overlap < tile:
        raise DessamError(f"the tile overlap ({overlap}) must be at least 0 and smaller than the tile size ({tile})")


def _window_instances(predict_fn: PredictFn, window_image: np.ndarray, window: int, y0: int, x0: int, inner: tuple):
    """Run `predict_fn` on one window and return its non-empty instances as image-space crops.

    `inner` says which window edges (top, bottom, left, right) lie inside the image.
    """
    boxes, scores, masks = predict_fn(window_image)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    masks = np.asarray(masks, dtype=bool)
    h, w = window_image.shape[:2]
    if masks.shape != (boxes.shape[0], h, w) or scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"predict_fn must return boxes (N, 4), scores (N,) and masks (N, {h}, {w}) for a "
            f"{h}x{w} window; got {boxes.shape}, {scores.shape} and {masks.shape}"
        )
    top, bottom, left, right = inner
    instances = []
    for box, score, mask in zip(boxes, scores, masks):
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            continue  # an empty mask cannot be matched across windows, so it is dropped
        cols = np.flatnonzero(mask.any(axis=0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        distances = [
            r0 if top else np.inf,
            h - r1 if bottom else np.inf,
            c0 if left else np.inf,
            w - c1 if right else np.inf,
        ]
        instances.append(
            _Instance(
                window=window,
                box=box + (x0, y0, x0, y0),
                score=float(score),
                y0=y0 + int(r0),
                x0=x0 + int(c0),
                mask=mask[r0:r1, c0:c1].copy(),
                margin=float(min(distances)),
            )
        )
    return instances


def _extent(inst: _Instance) -> tuple:
    h, w = inst.mask.shape
    return inst.y0, inst.x0, inst.y0 + h, inst.x0 + w


def _shared_pixels(a: _Instance, b: _Instance) -> int:
    """Pixels the two instances' own masks have in common."""
    ay0, ax0, ay1, ax1 = _extent(a)
    by0, bx0, by1, bx1 = _extent(b)
    y0, x0, y1, x1 = max(ay0, by0), max(ax0, bx0), min(ay1, by1), min(ax1, bx1)
    if y1 <= y0 or x1 <= x0:
        return 0
    return int((a.mask[y0 - ay0 : y1 - ay0, x0 - ax0 : x1 - ax0] & b.mask[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]).sum())


def _duplicates_kept(candidate: _Instance, kept: list[_Instance], extents: np.ndarray) -> bool:
    """Whether `candidate` shares over half of its (or the other's) pixels with an instance
    already kept from another window. `extents` holds the kept instances' (y0, x0, y1, x1);
    each overlap is measured against the kept instance's own mask."""
    y0, x0, y1, x1 = _extent(candidate)
    near = np.nonzero(
        (extents[:, 0] < y1) & (extents[:, 2] > y0) & (extents[:, 1] < x1) & (extents[:, 3] > x0)
    )[0]
    area = candidate.mask.sum()
    for index in near:
        other = kept[index]
        if other.window != candidate.window and _shared_pixels(candidate, other) > 0.5 * min(area, other.mask.sum()):
            return True
    return False


def _merge_tiled(image: np.ndarray, predict_fn: PredictFn, tile: int, overlap: int, progress: bool):
    """Predict every window and merge; returns the kept instances, highest score first."""
    _check_settings(tile, overlap)
    image = np.asarray(image)
    height, width = image.shape[:2]
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    windows = [(y, x) for y in ys for x in xs]
    instances: list[_Instance] = []
    for index, (y, x) in enumerate(tqdm(windows, desc="tiles", unit="tile", disable=not progress or len(windows) == 1)):
        y1, x1 = min(y + tile, height), min(x + tile, width)
        inner = (y > 0, y1 < height, x > 0, x1 < width)
        instances += _window_instances(predict_fn, image[y:y1, x:x1], index, y, x, inner)

    kept: list[_Instance] = []
    extents = np.zeros((len(instances), 4), dtype=np.int64)
    for candidate in sorted(instances, key=lambda inst: (-inst.margin, -inst.score)):
        if _duplicates_kept(candidate, kept, extents[: len(kept)]):
            continue
        extents[len(kept)] = _extent(candidate)
        kept.append(candidate)
    return [kept[i] for i in score_order([inst.score for inst in kept])]


def _boxes_scores(kept: list[_Instance]) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.array([inst.box for inst in kept], dtype=np.float64).reshape(-1, 4)
    return boxes, np.array([inst.score for inst in kept], dtype=np.float64)


def predict_tiled(
    image: np.ndarray, predict_fn: PredictFn, tile: int, overlap: int = 64, progress: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predict a large image window by window and merge the results without duplicates.

    `predict_fn(window_image) -> (boxes (n, 4) x1y1x2y2, scores (n,), masks bool (n, h, w))`
    in window coordinates. Returns `(boxes (N, 4) float, scores (N,), masks bool (N, H, W))` in
    image coordinates, highest score first. The full-size masks take N * H * W bytes; use
    `predict_tiled_labels` for large fields.
    """
    kept = _merge_tiled(image, predict_fn, tile, overlap, progress)
    height, width = np.asarray(image).shape[:2]
    masks = np.zeros((len(kept), height, width), dtype=bool)
    for mask, inst in zip(masks, kept):
        h, w = inst.mask.shape
        mask[inst.y0 : inst.y0 + h, inst.x0 : inst.x0 + w] = inst.mask
    return (*_boxes_scores(kept), masks)


def predict_tiled_labels(
    image: np.ndarray, predict_fn: PredictFn, tile: int, overlap: int = 64, progress: bool = True,
    overlap_winner: str = "lower-score",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like `predict_tiled`, but paints the instances straight into a label map.

    Returns `(labels (H, W) uint16/uint32, boxes (N, 4), scores (N,))`: label `k` is instance
    `k - 1`, ids run in descending score order and overlaps go to `overlap_winner`, exactly as
    `dessam.postprocess.masks_to_labels` would paint the masks of `predict_tiled`. Memory stays
    at one H x W map plus the instance crops.
    """
    kept = _merge_tiled(image, predict_fn, tile, overlap, progress)
    labels = np.zeros(np.asarray(image).shape[:2], dtype=np.uint32)
    for rank in paint_ranks(len(kept), overlap_winner):
        inst = kept[rank - 1]
        h, w = inst.mask.shape
        labels[inst.y0 : inst.y0 + h, inst.x0 : inst.x0 + w][inst.mask] = rank
    boxes, scores = _boxes_scores(kept)
    return labels.astype(label_dtype(len(kept)), copy=False), boxes, scores
