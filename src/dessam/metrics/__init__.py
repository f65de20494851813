"""Nucleus instance-segmentation metrics on integer label maps.

A label map is an H x W integer array, 0 = background, any other value = one instance (ids need
not be contiguous). Every per-image metric is computed from a single overlap table of the two
maps (`overlap_table`): the pixel count of every overlapping (ground truth, prediction) pair plus
the area of every instance. No full-image mask is ever built per instance; the Hausdorff
distance works on the bounding-box crop of each pair it needs.

Definitions (per image; `summarize` averages them over images):

- AJI: HoVer-Net's ``get_fast_aji``. Each ground-truth nucleus is paired with the prediction of
  highest IoU, scored as HoVer-Net does, ``inter / (union + 1e-6)`` (so an exact IoU tie goes to
  the larger pair, then to the lowest prediction id); a prediction may be reused. AJI = sum of
  paired intersections / (sum of paired unions + areas of ground-truth nuclei overlapping no
  prediction + areas of predictions paired with no ground truth).
- ADice: see `aggregated_dice`.
- PQ = DQ x SQ with unique matching at IoU > `iou` (>= 0.5, where matches are unique without an
  assignment solver); DQ = TP / (TP + FP/2 + FN/2), SQ = mean IoU of the matches. The detection
  scores (precision, recall, F1) use the same matches.
- pixel F1: Dice of the two foregrounds.
- object Dice / IoU / Hausdorff: the GlaS challenge definitions. Each ground-truth object is
  compared with the prediction it overlaps most (most pixels, ties to the lowest id) and each
  prediction with the ground-truth object it overlaps most; each side is weighted by object area,
  the two sides are averaged. An object overlapping nothing scores Dice/IoU 0; for Hausdorff it is
  compared with the nearest object of the other side (smallest Hausdorff distance). The Hausdorff
  distance is the one of the two pixel sets (Euclidean, pixel units), as the GlaS evaluation code
  computes it with ``bwdist``.
- COCO mask AP / AP50 / AP75: pycocotools ``COCOeval`` (segm) over a set of images.
- recall by size (`recall_by_size`): the detection matches above, counted per ground-truth
  nucleus size (the longer side of its box, in pixels) in `SIZE_BUCKETS`; pooled over a set's
  images (`pool_size_counts`), not averaged, since a bucket may be empty in most images.

Conventions when a map is empty (no instance):

======================================  ==========  ==========================================
metric                                  both empty  one empty (gt or prediction)
======================================  ==========  ==========================================
aji, adice, pq, dq, sq                  1.0         0.0
pixel_f1, object_dice, object_iou       1.0         0.0
precision, recall, f1                   1.0         0.0
object_hausdorff                        0.0         image diagonal, hypot(H, W)
tp, fp, fn, n_gt, n_pred                counts      counts
coco_mask_ap (ap, ap50, ap75)           1.0 when no image has ground truth nor prediction;
                                        0.0 when no image has ground truth but some prediction
======================================  ==========  ==========================================

When both maps hold instances, ratios with an empty denominator are 0 (e.g. SQ with no match).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .coco_ap import coco_mask_ap
from .hausdorff import table_hausdorff
from .overlap import Overlap, best_pair_per_row, empty_value, glas_partners, instance_boxes, overlap_table

__all__ = [
    "Overlap",
    "overlap_table",
    "aji",
    "aggregated_dice",
    "panoptic_quality",
    "detection_scores",
    "pixel_f1",
    "object_dice",
    "object_iou",
    "object_hausdorff",
    "counts",
    "evaluate_pair",
    "coco_mask_ap",
    "summarize",
    "recall_by_size",
    "pool_size_counts",
    "SIZE_BUCKETS",
]

# Nucleus size buckets for recall: the longer side of the ground-truth box, in pixels.
SIZE_BUCKETS = (("<12", 0, 12), ("12-20", 12, 20), ("20-30", 20, 30), (">=30", 30, math.inf))

AJI_IOU_EPS = 1e-6  # HoVer-Net's get_fast_aji scores candidate pairs with inter / (union + 1e-6)


def _aji_sums(table: Overlap) -> tuple[int, int]:
    """Aggregated intersection and union of HoVer-Net's AJI pairing."""
    union = table.union
    paired = best_pair_per_row(table.rows, table.cols, table.inter / (union + AJI_IOU_EPS))
    unpaired_gt = np.ones(table.n_gt, bool)
    unpaired_gt[table.rows[paired]] = False
    unused_pred = np.ones(table.n_pred, bool)
    unused_pred[table.cols[paired]] = False
    total_inter = int(table.inter[paired].sum())
    total_union = int(union[paired].sum() + table.gt_area[unpaired_gt].sum() + table.pred_area[unused_pred].sum())
    return total_inter, total_union


def _aji(table: Overlap) -> float:
    empty = empty_value(table, 1.0, 0.0)
    if empty is not None:
        return empty
    inter, union = _aji_sums(table)
    return inter / union


def _aggregated_dice(table: Overlap) -> float:
    empty = empty_value(table, 1.0, 0.0)
    if empty is not None:
        return empty
    inter, union = _aji_sums(table)
    return 2.0 * inter / (union + inter)


def _check_iou_threshold(iou: float) -> None:
    if not 0.5 <= iou < 1.0:
        raise ValueError(f"IoU threshold must be in [0.5, 1), got {iou}")


def _matched_ious(table: Overlap, iou: float) -> np.ndarray:
    """IoU of the uniquely matched pairs (IoU > `iou` >= 0.5 admits at most one per object)."""
    _check_iou_threshold(iou)
    pair_iou = table.iou
    return pair_iou[pair_iou > iou]


def _panoptic_quality(table: Overlap, iou: float) -> dict:
    matched = _matched_ious(table, iou)
    tp = int(matched.size)
    fp, fn = table.n_pred - tp, table.n_gt - tp
    empty = empty_value(table, 1.0, 0.0)
    if empty is not None:
        return dict(pq=empty, dq=empty, sq=empty, tp=tp, fp=fp, fn=fn)
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = float(matched.sum()) / tp if tp else 0.0
    return dict(pq=dq * sq, dq=dq, sq=sq, tp=tp, fp=fp, fn=fn)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def _detection_scores(table: Overlap, iou: float) -> dict:
    tp = int(_matched_ious(table, iou).size)
    fp, fn = table.n_pred - tp, table.n_gt - tp
    if table.n_gt == 0 and table.n_pred == 0:
        return dict(precision=1.0, recall=1.0, f1=1.0, tp=tp, fp=fp, fn=fn)
    return dict(
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        tp=tp,
        fp=fp,
        fn=fn,
    )


def _pixel_f1(table: Overlap) -> float:
    empty = empty_value(table, 1.0, 0.0)
    if empty is not None:
        return empty
    return 2.0 * int(table.inter.sum()) / int(table.gt_area.sum() + table.pred_area.sum())


def _glas_overlap_score(table: Overlap, pair_score: np.ndarray) -> float:
    """GlaS area-weighted two-sided average of a pair score; unmatched objects score 0."""
    of_gt, of_pred = glas_partners(table)
    gt_side = (table.gt_area[table.rows[of_gt]] * pair_score[of_gt]).sum() / table.gt_area.sum()
    pred_side = (table.pred_area[table.cols[of_pred]] * pair_score[of_pred]).sum() / table.pred_area.sum()
    return 0.5 * float(gt_side + pred_side)


def _object_dice(table: Overlap) -> float:
    empty = empty_value(table, 1.0, 0.0)
    if empty is not None:
        return empty
    return _glas_overlap_score(table, 2.0 * table.inter / (table.gt_area[table.rows] + table.pred_area[table.cols]))


def _object_iou(table: Overlap) -> float:
    empty = empty_value(table, 1.0, 0.0)
    if empty is not None:
        return empty
    return _glas_overlap_score(table, table.iou)


def aji(gt: np.ndarray, pred: np.ndarray) -> float:
    """Aggregated Jaccard Index with HoVer-Net's ``get_fast_aji`` pairing (see module docstring)."""
    return _aji(overlap_table(gt, pred))


def aggregated_dice(gt: np.ndarray, pred: np.ndarray) -> float:
    """Aggregated Dice (ADice): AJI's Kumar-style aggregation with Dice in place of Jaccard.

    Exactly: with AJI's pairing (each ground-truth nucleus G_i -> prediction S_j(i) of highest
    IoU, reuse allowed), ADice = 2 * sum_i |G_i & S_j(i)| / (sum_i (|G_i| + |S_j(i)|) + areas of
    unpaired ground-truth nuclei + areas of predictions paired with no ground truth). Because the
    pairing is shared, ADice = 2 AJI / (1 + AJI) on every image (not after averaging).
    """
    return _aggregated_dice(overlap_table(gt, pred))


def panoptic_quality(gt: np.ndarray, pred: np.ndarray, iou: float = 0.5) -> dict:
    """PQ, DQ, SQ and the TP/FP/FN counts of unique matching at IoU > `iou` (0.5 <= iou < 1)."""
    return _panoptic_quality(overlap_table(gt, pred), iou)


def detection_scores(gt: np.ndarray, pred: np.ndarray, iou: float = 0.5) -> dict:
    """Object precision, recall and F1 with the PQ matching (IoU > `iou`), plus TP/FP/FN."""
    return _detection_scores(overlap_table(gt, pred), iou)


def pixel_f1(gt: np.ndarray, pred: np.ndarray) -> float:
    """Pixel-level F1 (Dice) of the foregrounds (label > 0)."""
    return _pixel_f1(overlap_table(gt, pred))


def object_dice(gt: np.ndarray, pred: np.ndarray) -> float:
    """GlaS object-level Dice (area-weighted, both directions averaged)."""
    return _object_dice(overlap_table(gt, pred))


def object_iou(gt: np.ndarray, pred: np.ndarray) -> float:
    """Object-level IoU: the GlaS object Dice construction with IoU as the pair score."""
    return _object_iou(overlap_table(gt, pred))


def object_hausdorff(gt: np.ndarray, pred: np.ndarray) -> float:
    """GlaS object-level Hausdorff distance in pixels (see module docstring)."""
    return table_hausdorff(overlap_table(gt, pred))


def counts(gt: np.ndarray, pred: np.ndarray) -> dict:
    """Number of ground-truth and predicted instances."""
    table = overlap_table(gt, pred)
    return dict(n_gt=table.n_gt, n_pred=table.n_pred)


def evaluate_pair(gt: np.ndarray, pred: np.ndarray, iou: float = 0.5) -> dict:
    """Every per-image metric of one (ground truth, prediction) pair from one overlap table."""
    table = overlap_table(gt, pred)
    pq = _panoptic_quality(table, iou)
    detection = _detection_scores(table, iou)
    return dict(
        aji=_aji(table),
        adice=_aggregated_dice(table),
        pq=pq["pq"],
        dq=pq["dq"],
        sq=pq["sq"],
        pixel_f1=_pixel_f1(table),
        object_dice=_object_dice(table),
        object_iou=_object_iou(table),
        object_hausdorff=table_hausdorff(table),
        precision=detection["precision"],
        recall=detection["recall"],
        f1=detection["f1"],
        tp=pq["tp"],
        fp=pq["fp"],
        fn=pq["fn"],
        n_gt=table.n_gt,
        n_pred=table.n_pred,
    )


def recall_by_size(gt: np.ndarray, pred: np.ndarray, iou: float = 0.5) -> dict:
    """Per size bucket (`SIZE_BUCKETS`): the ground-truth nuclei of that size, and how many of them
    a prediction matches at IoU > `iou` (the matches of PQ and the detection scores)."""
    table = overlap_table(gt, pred)
    matched = np.zeros(table.n_gt, bool)
    pair_iou = table.iou
    matched[table.rows[pair_iou > iou]] = True
    boxes = instance_boxes(table.gt_index, table.n_gt)
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) + 1
    return {name: {"n": int(np.sum((sides >= low) & (sides < high))),
                   "found": int(np.sum(matched & (sides >= low) & (sides < high)))}
            for name, low, high in SIZE_BUCKETS}


def pool_size_counts(per_image: Sequence[dict]) -> dict:
    """`recall_by_size` results of several images pooled: per bucket n, found and recall (None when
    the bucket holds no nucleus)."""
    pooled = {}
    for name, _, _ in SIZE_BUCKETS:
        n = sum(result[name]["n"] for result in per_image)
        found = sum(result[name]["found"] for result in per_image)
        pooled[name] = {"n": n, "found": found, "recall": found / n if n else None}
    return pooled


def summarize(per_image: Sequence[dict]) -> dict:
    """Mean over images of every numeric entry, plus ``n_images``."""
    if not per_image:
        raise ValueError("no per-image results to summarize")
    keys = [key for key, value in per_image[0].items() if isinstance(value, (int, float, np.number))]
    summary = {key: float(np.mean([result[key] for result in per_image])) for key in keys}
    summary["n_images"] = len(per_image)
    return summary



