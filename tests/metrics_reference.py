"""Slow reference implementations of dessam.metrics, written straight from the definitions.

One boolean mask per instance and explicit loops, no shared overlap table: the tests check the
fast code against these, and benchmarks/bench_metrics.py times them. Conventions for empty maps
and tie-breaking are those documented in dessam.metrics.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.distance import cdist

AJI_IOU_EPS = 1e-6


def instance_ids(label_map: np.ndarray) -> list[int]:
    return [int(i) for i in np.unique(label_map) if i != 0]


def overlapping(mask: np.ndarray, other_map: np.ndarray) -> list[int]:
    """Ids of `other_map` that share at least one pixel with `mask`, in increasing order."""
    return instance_ids(other_map[mask])


def empty_value(gt: np.ndarray, pred: np.ndarray, both_empty: float, one_empty: float) -> float | None:
    has_gt, has_pred = bool((gt != 0).any()), bool((pred != 0).any())
    if not has_gt and not has_pred:
        return both_empty
    if not has_gt or not has_pred:
        return one_empty
    return None


def aji_pairing(gt: np.ndarray, pred: np.ndarray) -> tuple[list[tuple[int, int | None]], set[int]]:
    """HoVer-Net pairing: each gt id -> pred id of highest inter / (union + 1e-6), or None."""
    pairs, used = [], set()
    for g in instance_ids(gt):
        g_mask = gt == g
        best, best_score = None, 0.0
        for p in overlapping(g_mask, pred):
            p_mask = pred == p
            inter = int((g_mask & p_mask).sum())
            union = int((g_mask | p_mask).sum())
            score = inter / (union + AJI_IOU_EPS)
            if score > best_score:  # strict: ties keep the lowest prediction id
                best, best_score = p, score
        pairs.append((g, best))
        if best is not None:
            used.add(best)
    return pairs, used


def aji_sums(gt: np.ndarray, pred: np.ndarray) -> tuple[int, int, int]:
    """Paired intersection, AJI union and Dice-style size sum of the HoVer-Net pairing."""
    pairs, used = aji_pairing(gt, pred)
    inter = union = sizes = 0
    for g, p in pairs:
        g_mask = gt == g
        sizes += int(g_mask.sum())
        if p is None:
            union += int(g_mask.sum())
            continue
        p_mask = pred == p
        inter += int((g_mask & p_mask).sum())
        union += int((g_mask | p_mask).sum())
        sizes += int(p_mask.sum())
    for p in instance_ids(pred):
        if p not in used:
            union += int((pred == p).sum())
            sizes += int((pred == p).sum())
    return inter, union, sizes


def aji(gt: np.ndarray, pred: np.ndarray) -> float:
    empty = empty_value(gt, pred, 1.0, 0.0)
    if empty is not None:
        return empty
    inter, union, _ = aji_sums(gt, pred)
    return inter / union


def aggregated_dice(gt: np.ndarray, pred: np.ndarray) -> float:
    empty = empty_value(gt, pred, 1.0, 0.0)
    if empty is not None:
        return empty
    inter, _, sizes = aji_sums(gt, pred)
    return 2 * inter / sizes


def matches(gt: np.ndarray, pred: np.ndarray, iou: float) -> list[tuple[int, int, float]]:
    """All (gt id, pred id, IoU) with IoU > iou; checks that no object is matched twice."""
    found = []
    for g in instance_ids(gt):
        g_mask = gt == g
        for p in overlapping(g_mask, pred):
            p_mask = pred == p
            pair_iou = int((g_mask & p_mask).sum()) / int((g_mask | p_mask).sum())
            if pair_iou > iou:
                found.append((g, p, pair_iou))
    assert len({g for g, _, _ in found}) == len(found) == len({p for _, p, _ in found})
    return found


def panoptic_quality(gt: np.ndarray, pred: np.ndarray, iou: float = 0.5) -> dict:
    found = matches(gt, pred, iou)
    tp = len(found)
    fp = len(instance_ids(pred)) - tp
    fn = len(instance_ids(gt)) - tp
    empty = empty_value(gt, pred, 1.0, 0.0)
    if empty is not None:
        return dict(pq=empty, dq=empty, sq=empty, tp=tp, fp=fp, fn=fn)
    dq = tp / (tp + fp / 2 + fn / 2)
    sq = sum(v for _, _, v in found) / tp if tp else 0.0
    return dict(pq=dq * sq, dq=dq, sq=sq, tp=tp, fp=fp, fn=fn)


def detection_scores(gt: np.ndarray, pred: np.ndarray, iou: float = 0.5) -> dict:
    tp = len(matches(gt, pred, iou))
    n_gt, n_pred = len(instance_ids(gt)), len(instance_ids(pred))
    if n_gt == 0 and n_pred == 0:
        return dict(precision=1.0, recall=1.0, f1=1.0, tp=0, fp=0, fn=0)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gt if n_gt else 0.0
    f1 = 2 * tp / (n_gt + n_pred)
    return dict(precision=precision, recall=recall, f1=f1, tp=tp, fp=n_pred - tp, fn=n_gt - tp)


def pixel_f1(gt: np.ndarray, pred: np.ndarray) -> float:
    a, b = gt != 0, pred != 0
    if not a.any() and not b.any():
        return 1.0
    return 2 * int((a & b).sum()) / (int(a.sum()) + int(b.sum()))


def most_overlapping(mask: np.ndarray, other_map: np.ndarray) -> int | None:
    """Id of `other_map` sharing most pixels with `mask` (ties: lowest id), None if none."""
    best, best_inter = None, 0
    for other in overlapping(mask, other_map):
        inter = int((mask & (other_map == other)).sum())
        if inter > best_inter:
            best, best_inter = other, inter
    return best


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * int((a & b).sum()) / (int(a.sum()) + int(b.sum()))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return int((a & b).sum()) / int((a | b).sum())


def glas_side(source: np.ndarray, target: np.ndarray, score) -> float:
    """Area-weighted mean over `source` objects of score(object, most-overlapping target object)."""
    total_area = int((source != 0).sum())
    value = 0.0
    for s in instance_ids(source):
        s_mask = source == s
        t = most_overlapping(s_mask, target)
        pair_score = score(s_mask, target == t) if t is not None else 0.0
        value += int(s_mask.sum()) / total_area * pair_score
    return value


def object_dice(gt: np.ndarray, pred: np.ndarray) -> float:
    empty = empty_value(gt, pred, 1.0, 0.0)
    if empty is not None:
        return empty
    return 0.5 * (glas_side(gt, pred, dice) + glas_side(pred, gt, dice))


def object_iou(gt: np.ndarray, pred: np.ndarray) -> float:
    empty = empty_value(gt, pred, 1.0, 0.0)
    if empty is not None:
        return empty
    return 0.5 * (glas_side(gt, pred, jaccard) + glas_side(pred, gt, jaccard))


def hausdorff(a: np.ndarray, b: np.ndarray) -> float:
    """Hausdorff distance between the pixel sets of two masks, from all pairwise distances."""
    d = cdist(np.argwhere(a), np.argwhere(b))
    return float(max(d.min(axis=1).max(), d.min(axis=0).max()))


def hausdorff_side(source: np.ndarray, target: np.ndarray) -> float:
    total_area = int((source != 0).sum())
    value = 0.0
    for s in instance_ids(source):
        s_mask = source == s
        t = most_overlapping(s_mask, target)
        if t is not None:
            distance = hausdorff(s_mask, target == t)
        else:
            distance = min(hausdorff(s_mask, target == other) for other in instance_ids(target))
        value += int(s_mask.sum()) / total_area * distance
    return value


def object_hausdorff(gt: np.ndarray, pred: np.ndarray) -> float:
    empty = empty_value(gt, pred, 0.0, math.hypot(*gt.shape))
    if empty is not None:
        return empty
    return 0.5 * (hausdorff_side(gt, pred) + hausdorff_side(pred, gt))


def coco_mask_ap(gt_label_maps, pred_instances, max_dets: int = 1000) -> dict:
    """COCO's segm AP from its definition: greedy matching by score per image and IoU threshold,
    precision made non-increasing, read at 101 recall points, averaged over 10 IoU thresholds."""
    thresholds = np.linspace(0.5, 0.95, 10)
    recall_points = np.linspace(0.0, 1.0, 101)
    n_gt = sum(len(instance_ids(m)) for m in gt_label_maps)
    n_pred = sum(len(scores) for _, scores in pred_instances)
    if n_gt == 0:
        value = 0.0 if n_pred else 1.0
        return dict(ap=value, ap50=value, ap75=value)
    per_threshold = []
    for t in thresholds:
        scored = []  # (score, is true positive), in image order then per-image score order
        for label_map, (masks, scores) in zip(gt_label_maps, pred_instances):
            gts = [label_map == g for g in instance_ids(label_map)]
            order = np.argsort(-np.asarray(scores, float), kind="stable")[:max_dets]
            taken = [False] * len(gts)
            for d in order:
                best, best_iou = None, min(t, 1 - 1e-10)
                for k, g_mask in enumerate(gts):
                    if taken[k]:
                        continue
                    pair_iou = jaccard(masks[d], g_mask) if (masks[d] | g_mask).any() else 0.0
                    if pair_iou >= best_iou:  # ties go to the later ground truth, as in COCOeval
                        best, best_iou = k, pair_iou
                if best is not None:
                    taken[best] = True
                scored.append((float(scores[d]), best is not None))
        order = np.argsort(-np.array([s for s, _ in scored]), kind="stable")
        hits = np.array([scored[i][1] for i in order], bool)
        tp = np.cumsum(hits)
        fp = np.cumsum(~hits)
        recall = tp / n_gt
        precision = tp / np.maximum(tp + fp, 1)
        precision = np.maximum.accumulate(precision[::-1])[::-1] if precision.size else precision
        sampled = np.zeros(recall_points.size)
        for r, point in enumerate(recall_points):
            reached = np.flatnonzero(recall >= point)
            if reached.size:
                sampled[r] = precision[reached[0]]
        per_threshold.append(sampled.mean())
    per_threshold = np.array(per_threshold)
    return dict(ap=float(per_threshold.mean()), ap50=float(per_threshold[0]), ap75=float(per_threshold[5]))
