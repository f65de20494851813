"""COCO mask AP / AP50 / AP75 over a set of images with pycocotools' `COCOeval` (segm)."""

from __future__ import annotations

import contextlib
import io
from typing import Sequence

import numpy as np
from scipy import ndimage

from .overlap import check_label_map, relabel


def _encode(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    return mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))


def _coco_ground_truth(gt_label_maps: Sequence[np.ndarray]) -> dict:
    images, annotations = [], []
    for image_id, label_map in enumerate(gt_label_maps, start=1):
        label_map = check_label_map(label_map, f"ground-truth (image {image_id})")
        height, width = label_map.shape
        images.append(dict(id=image_id, height=height, width=width))
        ids, index = relabel(label_map.reshape(-1))
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
