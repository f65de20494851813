"""The overlap table of two label maps (`overlap_table`), from which every per-image metric of
`dessam.metrics` is computed, and the pairings read from it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Overlap:
    """Contingency table of a ground-truth and a predicted label map.

    Instances are indexed 0..G-1 and 0..P-1 in increasing id order. Only overlapping pairs are
    stored (`rows`, `cols`, `inter`, sorted by row then column), so memory grows with the number
    of touching pairs, not with G x P. `gt_index` / `pred_index` are the maps relabelled to
    1..G / 1..P (0 = background), used to crop single instances.
    """

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    gt_area: np.ndarray
    pred_area: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    inter: np.ndarray
    gt_index: np.ndarray
    pred_index: np.ndarray

    @property
    def n_gt(self) -> int:
        return int(self.gt_ids.size)

    @property
    def n_pred(self) -> int:
        return int(self.pred_ids.size)

    @property
    def shape(self) -> tuple[int, int]:
        return self.gt_index.shape

    @property
    def union(self) -> np.ndarray:
        return self.gt_area[self.rows] + self.pred_area[self.cols] - self.inter

    @property
    def iou(self) -> np.ndarray:
        return self.inter / self.union


def check_label_map(label_map: np.ndarray, name: str) -> np.ndarray:
    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise ValueError(f"{name} label map must be 2-D (H x W), got shape {label_map.shape}")
    if label_map.dtype == bool:
        return label_map.astype(np.uint8)
    if not np.issubdtype(label_map.dtype, np.integer):
        raise ValueError(f"{name} label map must hold integers, got dtype {label_map.dtype}")
    if label_map.size and np.issubdtype(label_map.dtype, np.signedinteger) and label_map.min() < 0:
        raise ValueError(f"{name} label map has negative ids; use 0 for background, >0 for nuclei")
    return label_map


def relabel(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted nonzero ids of `values` and each value's 1-based index among them (0 stays 0)."""
    ids, index = np.unique(values, return_inverse=True)
    index = index.reshape(-1)
    if ids.size and ids[0] == 0:
        return ids[1:], index
    return ids, index + 1


def overlap_table(gt: np.ndarray, pred: np.ndarray) -> Overlap:
    """Build the overlap table of two label maps of the same shape."""
    gt = check_label_map(gt, "ground-truth")
    pred = check_label_map(pred, "predicted")
    if gt.shape != pred.shape:
        raise ValueError(f"label maps differ in shape: ground truth {gt.shape}, prediction {pred.shape}")
    foreground = (gt != 0) | (pred != 0)
    gt_ids, g = relabel(gt[foreground])
    pred_ids, p = relabel(pred[foreground])
    n_gt, n_pred = gt_ids.size, pred_ids.size
    both = (g > 0) & (p > 0)
    pair_code = (g[both].astype(np.int64) - 1) * max(n_pred, 1) + (p[both] - 1)
    codes, inter = np.unique(pair_code, return_counts=True)
    gt_index = np.zeros(gt.shape, np.int32)
    gt_index[foreground] = g
    pred_index = np.zeros(pred.shape, np.int32)
    pred_index[foreground] = p
    return Overlap(
        gt_ids=gt_ids,
        pred_ids=pred_ids,
        gt_area=np.bincount(g, minlength=n_gt + 1)[1:].astype(np.int64),
        pred_area=np.bincount(p, minlength=n_pred + 1)[1:].astype(np.int64),
        rows=codes // max(n_pred, 1),
        cols=codes % max(n_pred, 1),
        inter=inter.astype(np.int64),
        gt_index=gt_index,
        pred_index=pred_index,
    )


def best_pair_per_row(rows: np.ndarray, cols: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Position (in the pair list) of each row's highest-scoring pair; ties go to the lowest column."""
    order = np.lexsort((cols, -score, rows))
    sorted_rows = rows[order]
    first = np.ones(sorted_rows.size, bool)
    first[1:] = sorted_rows[1:] != sorted_rows[:-1]
    return order[first]


def empty_value(table: Overlap, both_empty: float, one_empty: float) -> float | None:
    """The conventional value when a map has no instance, else None."""
    if table.n_gt == 0 and table.n_pred == 0:
        return both_empty
    if table.n_gt == 0 or table.n_pred == 0:
        return one_empty
    return None


def glas_partners(table: Overlap) -> tuple[np.ndarray, np.ndarray]:
    """Pair positions: each gt's most-overlapping prediction, each prediction's most-overlapping gt."""
    of_gt = best_pair_per_row(table.rows, table.cols, table.inter)
    of_pred = best_pair_per_row(table.cols, table.rows, table.inter)
    return of_gt, of_pred


def instance_boxes(index_map: np.ndarray, count: int) -> np.ndarray:
    """(count, 4) inclusive pixel boxes y0, x0, y1, x1 of instances 1..count of an index map."""
    slices = ndimage.find_objects(index_map, count)
    return np.array([[s[0].start, s[1].start, s[0].stop - 1, s[1].stop - 1] for s in slices], np.int64).reshape(-1, 4)
