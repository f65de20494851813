"""The GlaS object Hausdorff distance from an overlap table (`dessam.metrics.object_hausdorff`): each
pair's distance on the bounding-box crop it needs, never a full-image mask per instance."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy import ndimage

from .overlap import Overlap, empty_value, glas_partners, instance_boxes


def _set_hausdorff(a: np.ndarray, b: np.ndarray) -> float:
    """Hausdorff distance between the True pixels of two non-empty masks of the same crop."""
    to_a = ndimage.distance_transform_edt(~a)
    to_b = ndimage.distance_transform_edt(~b)
    return float(max(to_a[b].max(), to_b[a].max()))


class _PairHausdorff:
    """Hausdorff distance of (gt index, pred index) pairs on the union of their boxes, cached."""

    def __init__(self, table: Overlap):
        self.table = table
        self.gt_boxes = instance_boxes(table.gt_index, table.n_gt)
        self.pred_boxes = instance_boxes(table.pred_index, table.n_pred)
        self.cache: dict[tuple[int, int], float] = {}

    def __call__(self, g: int, p: int) -> float:
        key = (g, p)
        if key not in self.cache:
            gb, pb = self.gt_boxes[g], self.pred_boxes[p]
            y0, x0 = min(gb[0], pb[0]), min(gb[1], pb[1])
            y1, x1 = max(gb[2], pb[2]) + 1, max(gb[3], pb[3]) + 1
            a = self.table.gt_index[y0:y1, x0:x1] == g + 1
            b = self.table.pred_index[y0:y1, x0:x1] == p + 1
            self.cache[key] = _set_hausdorff(a, b)
        return self.cache[key]


def _nearest(box: np.ndarray, others: np.ndarray, distance: Callable[[int], float]) -> float:
    """Smallest Hausdorff distance from one object to any of `others` (boxes), pruned by a bound.

    For boxes A and B, H(A, B) >= |a - b| for each of the four box coordinates (the extreme pixel
    of one set is at least that far from every pixel of the other), so candidates are visited in
    increasing bound order and the search stops once the bound reaches the best distance found.
    """
    bound = np.abs(others - box).max(axis=1)
    best = math.inf
    for j in np.argsort(bound, kind="stable"):
        if bound[j] >= best:
            break
        best = min(best, distance(int(j)))
    return best


def table_hausdorff(table: Overlap) -> float:
    empty = empty_value(table, 0.0, float(np.hypot(*table.shape)))
    if empty is not None:
        return empty
    hausdorff = _PairHausdorff(table)
    of_gt, of_pred = glas_partners(table)
    gt_partner = np.full(table.n_gt, -1)
    gt_partner[table.rows[of_gt]] = table.cols[of_gt]
    pred_partner = np.full(table.n_pred, -1)
    pred_partner[table.cols[of_pred]] = table.rows[of_pred]

    gt_dist = np.empty(table.n_gt)
    for g in range(table.n_gt):
        p = gt_partner[g]
        if p >= 0:
            gt_dist[g] = hausdorff(g, int(p))
        else:
            gt_dist[g] = _nearest(hausdorff.gt_boxes[g], hausdorff.pred_boxes, lambda j: hausdorff(g, j))
    pred_dist = np.empty(table.n_pred)
    for p in range(table.n_pred):
        g = pred_partner[p]
        if g >= 0:
            pred_dist[p] = hausdorff(int(g), p)
        else:
            pred_dist[p] = _nearest(hausdorff.pred_boxes[p], hausdorff.gt_boxes, lambda i: hausdorff(i, p))
    gt_side = (table.gt_area * gt_dist).sum() / table.gt_area.sum()
    pred_side = (table.pred_area * pred_dist).sum() / table.pred_area.sum()
    return 0.5 * float(gt_side + pred_side)
