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

import contextlib
import io
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

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


def _check_label_map(label_map: np.ndarray, name: str) -> np.ndarray:
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


def _relabel(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted nonzero ids of `values` and each value's 1-based index among them (0 stays 0)."""
    ids, index = np.unique(values, return_inverse=True)
    index = index.reshape(-1)
    if ids.size and ids[0] == 0:
        return ids[1:], index
    return ids, index + 1


def overlap_table(gt: np.ndarray, pred: np.ndarray) -> Overlap:
    """Build the overlap table of two label maps of the same shape."""
    gt = _check_label_map(gt, "ground-truth")
    pred = _check_label_map(pred, "predicted")
    if gt.shape != pred.shape:
        raise ValueError(f"label maps differ in shape: ground truth {gt.shape}, prediction {pred.shape}")
    foreground = (gt != 0) | (pred != 0)
    gt_ids, g = _relabel(gt[foreground])
    pred_ids, p = _relabel(pred[foreground])
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


def _best_pair_per_row(rows: np.ndarray, cols: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Position (in the pair list) of each row's highest-scoring pair; ties go to the lowest column."""
    order = np.lexsort((cols, -score, rows))
    sorted_rows = rows[order]
    first = np.ones(sorted_rows.size, bool)
    first[1:] = sorted_rows[1:] != sorted_rows[:-1]
    return order[first]


def _empty_value(table: Overlap, both_empty: float, one_empty: float) -> float | None:
    """The conventional value when a map has no instance, else None."""
    if table.n_gt == 0 and table.n_pred == 0:
        return both_empty
    if table.n_gt == 0 or table.n_pred == 0:
        return one_empty
    return None


def _aji_sums(table: Overlap) -> tuple[int, int]:
    """Aggregated intersection and union of HoVer-Net's AJI pairing."""
    union = table.union
    paired = _best_pair_per_row(table.rows, table.cols, table.inter / (union + AJI_IOU_EPS))
    unpaired_gt = np.ones(table.n_gt, bool)
    unpaired_gt[table.rows[paired]] = False
    unused_pred = np.ones(table.n_pred, bool)
    unused_pred[table.cols[paired]] = False
    total_inter = int(table.inter[paired].sum())
    total_union = int(union[paired].sum() + table.gt_area[unpaired_gt].sum() + table.pred_area[unused_pred].sum())
    return total_inter, total_union


def _aji(table: Overlap) -> float:
    empty = _empty_value(table, 1.0, 0.0)
    if empty is not None:
        return empty
    inter, union = _aji_sums(table)
    return inter / union


def _aggregated_dice(table: Overlap) -> float:
    empty = _empty_value(table, 1.0, 0.0)
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
    empty = _empty_value(table, 1.0, 0.0)
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
    empty = _empty_value(table, 1.0, 0.0)
    if empty is not None:
        return empty
    return 2.0 * int(table.inter.sum()) / int(table.gt_area.sum() + table.pred_area.sum())


def _glas_partners(table: Overlap) -> tuple[np.ndarray, np.ndarray]:
    """Pair positions: each gt's most-overlapping prediction, each prediction's most-overlapping gt."""
    of_gt = _best_pair_per_row(table.rows, table.cols, table.inter)
    of_pred = _best_pair_per_row(table.cols, table.rows, table.inter)
    return of_gt, of_pred


def _glas_overlap_score(table: Overlap, pair_score: np.ndarray) -> float:
    """GlaS area-weighted two-sided average of a pair score; unmatched objects score 0."""
    of_gt, of_pred = _glas_partners(table)
    gt_side = (table.gt_area[table.rows[of_gt]] * pair_score[of_gt]).sum() / table.gt_area.sum()
    pred_side = (table.pred_area[table.cols[of_pred]] * pair_score[of_pred]).sum() / table.pred_area.sum()
    return 0.5 * float(gt_side + pred_side)


def _object_dice(table: Overlap) -> float:
    empty = _empty_value(table, 1.0, 0.0)
    if empty is not None:
        return empty
    return _glas_overlap_score(table, 2.0 * table.inter / (table.gt_area[table.rows] + table.pred_area[table.cols]))


def _object_iou(table: Overlap) -> float:
    empty = _empty_value(table, 1.0, 0.0)
    if empty is not None:
        return empty
    return _glas_overlap_score(table, table.iou)


def _boxes(index_map: np.ndarray, count: int) -> np.ndarray:
    """(count, 4) inclusive pixel boxes y0, x0, y1, x1 of instances 1..count of an index map."""
    slices = ndimage.find_objects(index_map, count)
    return np.array([[s[0].start, s[1].start, s[0].stop - 1, s[1].stop - 1] for s in slices], np.int64).reshape(-1, 4)


def _set_hausdorff(a: np.ndarray, b: np.ndarray) -> float:
    """Hausdorff distance between the True pixels of two non-empty masks of the same crop."""
    to_a = ndimage.distance_transform_edt(~a)
    to_b = ndimage.distance_transform_edt(~b)
    return float(max(to_a[b].max(), to_b[a].max()))


class _PairHausdorff:
    """Hausdorff distance of (gt index, pred index) pairs on the union of their boxes, cached."""

    def __init__(self, table: Overlap):
        self.table = table
        self.gt_boxes = _boxes(table.gt_index, table.n_gt)
        self.pred_boxes = _boxes(table.pred_index, table.n_pred)
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


def _object_hausdorff(table: Overlap) -> float:
    empty = _empty_value(table, 0.0, float(np.hypot(*table.shape)))
    if empty is not None:
        return empty
    hausdorff = _PairHausdorff(table)
    of_gt, of_pred = _glas_partners(table)
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
    return _object_hausdorff(overlap_table(gt, pred))


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
        object_hausdorff=_object_hausdorff(table),
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
    boxes = _boxes(table.gt_index, table.n_gt)
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


def _encode(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    return mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))


def _coco_ground_truth(gt_label_maps: Sequence[np.ndarray]) -> dict:
    images, annotations = [], []
    for image_id, label_map in enumerate(gt_label_maps, start=1):
        label_map = _check_label_map(label_map, f"ground-truth (image {image_id})")
        height, width = label_map.shape
        images.append(dict(id=image_id, height=height, width=width))
        ids, index = _relabel(label_map.reshape(-1))
        index_map = index.reshape(label_map.shape)
        canvas = np.zeros(label_map.shape, np.uint8, order="F")
        for k, box in enumerate(ndimage.find_objects(index_map, ids.size), start=1):
            piece = index_map[box] == k
            canvas[box] = piece
            rle = _encode(canvas)
            canvas[box] = 0
            y, x = box
            annotations.append(
                dict(id=len(annotations) + 1, image_id=image_id, category_id=1, segmentation=rle, iscrowd=0,
                     area=float(piece.sum()), bbox=[float(x.start), float(y.start), float(x.stop - x.start),
                                                    float(y.stop - y.start)])
            )
    return dict(images=images, annotations=annotations, categories=[dict(id=1, name="nucleus")])


def _coco_predictions(gt_label_maps: Sequence[np.ndarray], pred_instances: Sequence) -> list[dict]:
    if len(pred_instances) != len(gt_label_maps):
        raise ValueError(f"{len(gt_label_maps)} ground-truth label maps but {len(pred_instances)} predictions")
    results = []
    for image_id, (label_map, (masks, scores)) in enumerate(zip(gt_label_maps, pred_instances), start=1):
        scores = np.asarray(scores, np.float64).reshape(-1)
        if isinstance(masks, list) and all(isinstance(m, dict) for m in masks):  # COCO RLEs, one per instance
            if len(masks) != len(scores) or any(list(m["size"]) != list(np.shape(label_map)) for m in masks):
                raise ValueError(f"image {image_id}: {len(masks)} RLE masks and {len(scores)} scores do not fit "
                                 f"a ground-truth map of shape {np.shape(label_map)}")
            results += [dict(image_id=image_id, category_id=1, segmentation=m, score=float(v)) for m, v in zip(masks, scores)]
            continue
        masks = np.asarray(masks, bool)
        if masks.ndim != 3 or masks.shape[1:] != np.shape(label_map) or len(masks) != len(scores):
            raise ValueError(
                f"image {image_id}: predicted masks {masks.shape} and {len(scores)} scores do not fit "
                f"a ground-truth map of shape {np.shape(label_map)}"
            )
        for mask, score in zip(masks, scores):
            results.append(dict(image_id=image_id, category_id=1, segmentation=_encode(mask), score=float(score)))
    return results


def coco_mask_ap(gt_label_maps: Sequence[np.ndarray], pred_instances: Sequence, max_dets: int = 1000) -> dict:
    """COCO mask AP (IoU 0.50:0.95), AP50 and AP75 over a set of images, via pycocotools.

    `pred_instances[i]` is ``(masks, scores)`` for image i: boolean N x H x W masks, or a list of N
    COCO RLE dicts (memory that does not grow with nuclei x image area), and N scores.
    Every image keeps its `max_dets` best-scoring predictions (default 1000, mmdetection's
    CocoMetric setting; COCO's own 100 truncates dense nucleus images). Area ranges are not split.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ground_truth = _coco_ground_truth(gt_label_maps)
    predictions = _coco_predictions(gt_label_maps, pred_instances)
    if not ground_truth["annotations"]:
        value = 0.0 if predictions else 1.0
        return dict(ap=value, ap50=value, ap75=value)
    if not predictions:
        return dict(ap=0.0, ap50=0.0, ap75=0.0)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = ground_truth
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(predictions)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
        evaluator.params.maxDets = [max_dets]
        evaluator.params.areaRng = [[0.0, 1e10]]
        evaluator.params.areaRngLbl = ["all"]
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, 0, 0, 0]  # IoU thresholds x recall thresholds
    thresholds = evaluator.params.iouThrs

    def mean_at(rows: np.ndarray) -> float:
        return float(precision[rows].mean())

    return dict(
        ap=mean_at(np.arange(len(thresholds))),
        ap50=mean_at(np.isclose(thresholds, 0.5)),
        ap75=mean_at(np.isclose(thresholds, 0.75)),
    )
