"""dessam.metrics against slow references, published implementations and hand-worked cases."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import metrics_reference as ref
from dessam import metrics

DTYPES = [np.uint8, np.uint16, np.int32, np.uint32, np.int64]


# ---------------------------------------------------------------- random label-map pairs
def _random_shapes(rng: np.random.Generator, n: int, h: int, w: int) -> list[tuple]:
    """Rectangles and ellipses (kind, cy, cx, ry, rx); a quarter are nested in an earlier one."""
    shapes = []
    for _ in range(n):
        kind = str(rng.choice(["rect", "ellipse"]))
        if shapes and rng.random() < 0.25:
            _, cy, cx, ry, rx = shapes[rng.integers(len(shapes))]
            shapes.append((kind, cy + int(rng.integers(-1, 2)), cx + int(rng.integers(-1, 2)), ry // 2, rx // 2))
        else:
            shapes.append((kind, int(rng.integers(h)), int(rng.integers(w)),
                           int(rng.integers(h // 4 + 1)), int(rng.integers(w // 4 + 1))))
    return shapes


def _jitter(rng: np.random.Generator, shapes: list[tuple], h: int, w: int) -> list[tuple]:
    """Shift and resize each shape a little, drop some, add a few strays."""
    moved = [
        (kind, cy + int(rng.integers(-2, 3)), cx + int(rng.integers(-2, 3)),
         max(0, ry + int(rng.integers(-1, 2))), max(0, rx + int(rng.integers(-1, 2))))
        for kind, cy, cx, ry, rx in shapes
        if rng.random() > 0.15
    ]
    return moved + _random_shapes(rng, int(rng.integers(0, 3)), h, w)


def _ids(rng: np.random.Generator, n: int, dtype) -> np.ndarray:
    """n distinct, non-contiguous positive ids that fit `dtype`."""
    high = min(np.iinfo(dtype).max, 2**31 - 1)
    return rng.choice(np.arange(1, 256) if high < 256 else rng.integers(1, high, size=4 * n + 8),
                      size=n, replace=False)


def _paint(shapes: list[tuple], h: int, w: int, ids: np.ndarray, dtype) -> np.ndarray:
    out = np.zeros((h, w), dtype)
    yy, xx = np.mgrid[:h, :w]
    for (kind, cy, cx, ry, rx), i in zip(shapes, ids):
        if kind == "rect":
            inside = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
        else:
            inside = ((yy - cy) / (ry + 0.5)) ** 2 + ((xx - cx) / (rx + 0.5)) ** 2 <= 1.0
        out[inside] = i  # later shapes paint over earlier ones: touching, occluded, split objects
    return out


def make_pair(seed: int, h: int, w: int, n_gt: int, mode: str, dtype) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt_shapes = _random_shapes(rng, n_gt, h, w)
    gt = _paint(gt_shapes, h, w, _ids(rng, len(gt_shapes), dtype), dtype)
    if mode == "empty":
        return gt, np.zeros_like(gt)
    if mode == "same":
        pred = _paint(gt_shapes, h, w, _ids(rng, len(gt_shapes), dtype), dtype)
    elif mode == "jitter":
        shapes = _jitter(rng, gt_shapes, h, w)
        pred = _paint(shapes, h, w, _ids(rng, len(shapes), dtype), dtype)
    else:
        shapes = _random_shapes(rng, int(rng.integers(0, 13)), h, w)
        pred = _paint(shapes, h, w, _ids(rng, len(shapes), dtype), dtype)
    return gt, pred


@st.composite
def label_map_pairs(draw, dtypes=DTYPES):
    return make_pair(
        seed=draw(st.integers(0, 2**32 - 1)),
        h=draw(st.integers(16, 48)),
        w=draw(st.integers(16, 48)),
        n_gt=draw(st.integers(0, 12)),
        mode=draw(st.sampled_from(["jitter", "jitter", "independent", "same", "empty"])),
        dtype=draw(st.sampled_from(dtypes)),
    )


def test_generator_makes_hard_cases():
    """The random pairs include matches, touching instances and gt nuclei sharing a prediction."""
    pairs = [make_pair(seed, 32, 32, 10, "jitter", np.uint16) for seed in range(30)]
    assert any(ref.panoptic_quality(gt, pred)["tp"] > 0 for gt, pred in pairs)
    assert any(((gt[:, 1:] != gt[:, :-1]) & (gt[:, 1:] > 0) & (gt[:, :-1] > 0)).any() for gt, _ in pairs)
    pairings = [ref.aji_pairing(gt, pred) for gt, pred in pairs]
    assert any(len(used) < sum(p is not None for _, p in paired) for paired, used in pairings)


# ---------------------------------------------------------------- fast == slow reference
def reference_results(gt: np.ndarray, pred: np.ndarray) -> dict:
    pq = ref.panoptic_quality(gt, pred)
    detection = ref.detection_scores(gt, pred)
    return dict(
        aji=ref.aji(gt, pred),
        adice=ref.aggregated_dice(gt, pred),
        pq=pq["pq"], dq=pq["dq"], sq=pq["sq"],
        pixel_f1=ref.pixel_f1(gt, pred),
        object_dice=ref.object_dice(gt, pred),
        object_iou=ref.object_iou(gt, pred),
        object_hausdorff=ref.object_hausdorff(gt, pred),
        precision=detection["precision"], recall=detection["recall"], f1=detection["f1"],
        tp=pq["tp"], fp=pq["fp"], fn=pq["fn"],
        n_gt=len(ref.instance_ids(gt)), n_pred=len(ref.instance_ids(pred)),
    )


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(label_map_pairs())
def test_every_metric_matches_reference(pair):
    gt, pred = pair
    got = metrics.evaluate_pair(gt, pred)
    want = reference_results(gt, pred)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=0, abs=1e-9), key


@settings(max_examples=30, deadline=None, derandomize=True)
@given(label_map_pairs(), st.sampled_from([0.5, 0.6, 0.75, 0.9]))
def test_public_functions_match_reference(pair, iou):
    gt, pred = pair
    tol = dict(rel=0, abs=1e-9)
    assert metrics.aji(gt, pred) == pytest.approx(ref.aji(gt, pred), **tol)
    assert metrics.aggregated_dice(gt, pred) == pytest.approx(ref.aggregated_dice(gt, pred), **tol)
    assert metrics.panoptic_quality(gt, pred, iou) == pytest.approx(ref.panoptic_quality(gt, pred, iou), **tol)
    assert metrics.detection_scores(gt, pred, iou) == pytest.approx(ref.detection_scores(gt, pred, iou), **tol)
    assert metrics.pixel_f1(gt, pred) == pytest.approx(ref.pixel_f1(gt, pred), **tol)
    assert metrics.object_dice(gt, pred) == pytest.approx(ref.object_dice(gt, pred), **tol)
    assert metrics.object_iou(gt, pred) == pytest.approx(ref.object_iou(gt, pred), **tol)
    assert metrics.object_hausdorff(gt, pred) == pytest.approx(ref.object_hausdorff(gt, pred), **tol)
    assert metrics.counts(gt, pred) == dict(n_gt=len(ref.instance_ids(gt)), n_pred=len(ref.instance_ids(pred)))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(label_map_pairs())
def test_adice_is_aji_transform(pair):
    gt, pred = pair
    a = metrics.aji(gt, pred)
    assert metrics.aggregated_dice(gt, pred) == pytest.approx(2 * a / (1 + a), rel=0, abs=1e-12)


def test_metrics_ignore_id_values():
    gt, pred = make_pair(7, 40, 40, 10, "jitter", np.int64)
    ids = np.unique(gt)[1:]
    relabelled = np.zeros_like(gt)
    for new, old in enumerate(ids[::-1], start=1):  # reversed order may change tie-breaking only
        relabelled[gt == old] = new * 1000
    a, b = metrics.evaluate_pair(gt, pred), metrics.evaluate_pair(relabelled, pred)
    for key in ("pq", "dq", "sq", "pixel_f1", "tp", "fp", "fn", "n_gt", "n_pred"):
        assert a[key] == pytest.approx(b[key], abs=1e-12), key


# ---------------------------------------------------------------- hand-worked example
def test_hand_worked_example():
    gt = np.zeros((10, 10), np.uint16)
    gt[1:4, 1:4] = 5  # 9 px
    gt[5:9, 5:9] = 7  # 16 px
    pred = np.zeros((10, 10), np.uint16)
    pred[1:4, 2:5] = 2  # 9 px, 6 px on gt 5, IoU 6/12
    pred[6:9, 5:9] = 3  # 12 px, all on gt 7, IoU 12/16
    pred[0, 9] = 9  # 1 px stray
    r = metrics.evaluate_pair(gt, pred)
    # AJI: (6 + 12) / (12 + 16 + 1 stray)
    assert r["aji"] == pytest.approx(18 / 29)
    # PQ: only 12/16 = 0.75 > 0.5 matches -> tp 1, fp 2, fn 1
    assert (r["tp"], r["fp"], r["fn"]) == (1, 2, 1)
    assert r["dq"] == pytest.approx(1 / (1 + 1.5)) and r["sq"] == pytest.approx(0.75)
    assert r["pq"] == pytest.approx(0.75 / 2.5)
    assert r["pixel_f1"] == pytest.approx(2 * 18 / (25 + 22))
    # GlaS object Dice: gt side (9*12/18 + 16*24/28)/25, pred side (9*12/18 + 12*24/28 + 1*0)/22
    gt_side = (9 * 12 / 18 + 16 * 24 / 28) / 25
    pred_side = (9 * 12 / 18 + 12 * 24 / 28) / 22
    assert r["object_dice"] == pytest.approx((gt_side + pred_side) / 2)
    assert r["precision"] == pytest.approx(1 / 3) and r["recall"] == pytest.approx(1 / 2)


def test_hausdorff_of_shifted_square_and_nearest_objects():
    gt = np.zeros((20, 20), np.uint8)
    gt[2:6, 2:6] = 1  # 16 px
    gt[10:12, 0:2] = 2  # 4 px, overlaps nothing
    pred = np.zeros((20, 20), np.uint8)
    pred[2:6, 3:7] = 1  # gt 1 shifted right by one pixel: Hausdorff 1
    pred[15:17, 15:17] = 2  # 4 px, overlaps nothing
    # gt 2 -> nearest prediction is pred 1: farthest point (2,6) of pred 1 to gt 2's (10,1)
    # pred 2 -> nearest gt is gt 2: (10,0) to (15,15) [gt 1 is farther: (2,2) to (15,15)]
    gt_side = (16 * 1.0 + 4 * math.hypot(8, 5)) / 20
    pred_side = (16 * 1.0 + 4 * math.hypot(5, 15)) / 20
    assert metrics.object_hausdorff(gt, pred) == pytest.approx(0.5 * (gt_side + pred_side))


def iou_tie_pair() -> tuple[np.ndarray, np.ndarray]:
    """One gt nucleus and two predictions with exactly the same IoU, 1/5, with it."""
    gt = np.zeros((3, 12), np.uint8)
    gt[1, 0:10] = 1  # 10 px
    pred = np.zeros((3, 12), np.uint8)
    pred[1, 0:2] = 1  # inter 2, union 10: IoU 1/5
    pred[1, 7:10] = 2  # inter 3 ...
    pred[0, 7:12] = 2  # ... plus 5 px outside: union 15, IoU 1/5 too
    return gt, pred


def test_aji_iou_ties_go_to_the_larger_pair_as_in_hovernet():
    gt, pred = iou_tie_pair()
    # inter / (union + 1e-6) prefers the larger pair (pred 2): AJI = 3 / (15 + 2 unpaired px)
    assert metrics.aji(gt, pred) == pytest.approx(3 / 17)
    assert ref.aji(gt, pred) == pytest.approx(3 / 17)


# ---------------------------------------------------------------- empty maps
@pytest.mark.parametrize("shape", [(8, 8), (12, 30)])
def test_empty_conventions(shape):
    empty = np.zeros(shape, np.uint16)
    some = empty.copy()
    some[2:5, 2:5] = 3
    both = metrics.evaluate_pair(empty, empty)
    for key in ("aji", "adice", "pq", "dq", "sq", "pixel_f1", "object_dice", "object_iou",
                "precision", "recall", "f1"):
        assert both[key] == 1.0, key
        assert metrics.evaluate_pair(some, empty)[key] == 0.0, key
        assert metrics.evaluate_pair(empty, some)[key] == 0.0, key
    assert both["object_hausdorff"] == 0.0
    diagonal = math.hypot(*shape)
    assert metrics.evaluate_pair(some, empty)["object_hausdorff"] == pytest.approx(diagonal)
    assert metrics.evaluate_pair(empty, some)["object_hausdorff"] == pytest.approx(diagonal)
    assert metrics.evaluate_pair(some, empty)["fn"] == 1 and metrics.evaluate_pair(empty, some)["fp"] == 1


def test_identical_maps_score_perfectly():
    gt, _ = make_pair(3, 40, 40, 10, "same", np.uint16)
    r = metrics.evaluate_pair(gt, gt)
    for key in ("aji", "adice", "pq", "dq", "sq", "pixel_f1", "object_dice", "object_iou", "f1"):
        assert r[key] == pytest.approx(1.0), key
    assert r["object_hausdorff"] == 0.0


# ---------------------------------------------------------------- input checks, summary
def test_rejects_bad_inputs():
    a = np.zeros((5, 5), np.uint8)
    with pytest.raises(ValueError, match="shape"):
        metrics.aji(a, np.zeros((5, 6), np.uint8))
    with pytest.raises(ValueError, match="integers"):
        metrics.aji(a, np.zeros((5, 5), np.float32))
    with pytest.raises(ValueError, match="negative"):
        metrics.aji(a, -np.ones((5, 5), np.int32))
    with pytest.raises(ValueError, match="2-D"):
        metrics.aji(np.zeros((2, 5, 5), np.uint8), np.zeros((2, 5, 5), np.uint8))
    with pytest.raises(ValueError, match="IoU threshold"):
        metrics.panoptic_quality(a, a, iou=0.3)
    with pytest.raises(ValueError):
        metrics.summarize([])


def test_summarize_means_over_images():
    pairs = [make_pair(seed, 24, 24, 6, "jitter", np.uint16) for seed in range(4)]
    per_image = [metrics.evaluate_pair(gt, pred) for gt, pred in pairs]
    summary = metrics.summarize(per_image)
    assert summary["n_images"] == 4
    for key in per_image[0]:
        assert summary[key] == pytest.approx(sum(r[key] for r in per_image) / 4), key


# ---------------------------------------------------------------- COCO mask AP
def _instances_with_scores(seed: int, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The prediction map's instances plus a few free-floating (overlapping) masks, distinct scores."""
    rng = np.random.default_rng(seed)
    masks = [pred == i for i in ref.instance_ids(pred)]
    h, w = pred.shape
    for _ in range(int(rng.integers(0, 3))):
        extra = np.zeros((h, w), bool)
        y, x = int(rng.integers(h - 4)), int(rng.integers(w - 4))
        extra[y:y + int(rng.integers(2, 9)), x:x + int(rng.integers(2, 9))] = True
        masks.append(extra)
    stack = np.array(masks, bool).reshape(len(masks), h, w)
    return stack, rng.permutation(len(masks)) / max(len(masks), 1) + rng.random() * 1e-3


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(label_map_pairs(dtypes=[np.uint16]), min_size=1, max_size=3), st.sampled_from([1000, 3]))
def test_coco_mask_ap_matches_reference(pairs, max_dets):
    gts = [gt for gt, _ in pairs]
    preds = [_instances_with_scores(k, pred) for k, (_, pred) in enumerate(pairs)]
    got = metrics.coco_mask_ap(gts, preds, max_dets=max_dets)
    want = ref.coco_mask_ap(gts, preds, max_dets=max_dets)
    assert got == pytest.approx(want, rel=0, abs=1e-9)


def test_coco_mask_ap_edge_cases():
    gt, pred = make_pair(1, 32, 32, 8, "same", np.uint16)
    masks = np.array([pred == i for i in ref.instance_ids(pred)])
    perfect = metrics.coco_mask_ap([gt], [(masks, np.linspace(1, 0.5, len(masks)))])
    assert perfect == pytest.approx(dict(ap=1.0, ap50=1.0, ap75=1.0))
    no_pred = (np.zeros((0, 32, 32), bool), np.zeros(0))
    assert metrics.coco_mask_ap([gt], [no_pred]) == dict(ap=0.0, ap50=0.0, ap75=0.0)
    empty = np.zeros_like(gt)
    assert metrics.coco_mask_ap([empty], [no_pred]) == dict(ap=1.0, ap50=1.0, ap75=1.0)
    assert metrics.coco_mask_ap([empty], [(masks, np.ones(len(masks)))]) == dict(ap=0.0, ap50=0.0, ap75=0.0)
    with pytest.raises(ValueError, match="do not fit"):
        metrics.coco_mask_ap([gt], [(masks[:, :10], np.ones(len(masks)))])


# ---------------------------------------------------------------- published HoVer-Net implementations
@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(label_map_pairs(dtypes=[np.uint16, np.int32]))
def test_pq_matches_monai_hovernet_port(pair):
    """MONAI's compute_panoptic_quality is a port of HoVer-Net's get_fast_pq (float32 IoUs)."""
    monai_pq = pytest.importorskip(
        "monai.metrics.panoptic_quality", reason="monai not installed (test extra: monai==1.6.1)"
    )
    import torch

    gt, pred = pair
    tp, fp, fn, iou_sum = monai_pq.compute_panoptic_quality(
        torch.from_numpy(pred.astype(np.int32)), torch.from_numpy(gt.astype(np.int32)),
        output_confusion_matrix=True,
    ).tolist()
    ours = metrics.panoptic_quality(gt, pred)
    assert (ours["tp"], ours["fp"], ours["fn"]) == (tp, fp, fn)
    if ours["tp"]:
        assert ours["sq"] * ours["tp"] == pytest.approx(iou_sum, rel=1e-6)
        assert ours["pq"] == pytest.approx(iou_sum / (tp + 0.5 * fp + 0.5 * fn), rel=1e-6)


def _max_intersection_pairing_agrees(gt: np.ndarray, pred: np.ndarray) -> bool:
    """True when every gt's most-overlapping prediction is unique and is also its highest-IoU one."""
    table = metrics.overlap_table(gt, pred)
    for row in np.unique(table.rows):
        here = table.rows == row
        inter, iou = table.inter[here], table.iou[here]
        if (inter == inter.max()).sum() > 1 or inter.argmax() != iou.argmax() or (iou == iou.max()).sum() > 1:
            return False
    return True


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(label_map_pairs())
def test_aji_and_pq_match_cellseg_metrics(pair):
    """cellseg-metrics adapts HoVer-Net: its PQ is get_fast_pq; its AJI pairs each gt nucleus with
    the prediction of largest *intersection* (all tied ones), HoVer-Net with largest IoU, so AJI is
    compared where the two pairings coincide."""
    csm = pytest.importorskip("cellseg_metrics", reason="cellseg-metrics not installed (test extra)")
    gt, pred = pair
    assume(gt.any() and pred.any())  # cellseg-metrics returns 0 when a map is empty
    pq = metrics.panoptic_quality(gt, pred)
    theirs = csm.panoptic_quality(gt, pred)
    for key in ("pq", "dq", "sq"):
        assert pq[key] == pytest.approx(theirs[key], rel=1e-6, abs=1e-7), key
    assume(_max_intersection_pairing_agrees(gt, pred))
    assert metrics.aji(gt, pred) == pytest.approx(csm.aggregated_jaccard_index(gt, pred), rel=1e-6)


# ---------------------------------------------------------------- HoVer-Net's own code
HOVERNET_MISSING = "hover-net not installed (pip install --no-deps hover-net==0.0.10, as `make install` does)"


@pytest.fixture(scope="module")
def hovernet():
    """HoVer-Net's metrics/stats_utils.py, loaded by path.

    The hover_net package's __init__ imports cv2, imgaug and openslide, and its declared dependencies
    pin old numpy and scikit-image, so it is installed with --no-deps and only this file (numpy and
    scipy only) is executed.
    """
    spec = importlib.util.find_spec("hover_net")  # locates the package without running __init__
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(HOVERNET_MISSING)
    path = Path(spec.submodule_search_locations[0]) / "metrics" / "stats_utils.py"
    if not path.is_file():
        pytest.skip(f"{HOVERNET_MISSING}: {path} missing")
    file_spec = importlib.util.spec_from_file_location("hovernet_stats_utils", path)
    module = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(module)
    return module


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(label_map_pairs(), st.sampled_from([0.5, 0.6, 0.75, 0.9]))
def test_aji_and_pq_match_hovernet(hovernet, pair, iou):
    """AJI equals HoVer-Net's get_fast_aji and PQ/DQ/SQ/TP/FP/FN its get_fast_pq.

    Calling their code: their fast functions need contiguous ids, so both maps go through their
    remap_label first (it keeps the id order, hence the same tie-breaking to the lowest id); and
    remap_label assumes the map holds background (it removes id 0 from its list), so both maps get a
    one-pixel background border, which changes no metric. get_fast_aji fails on a map without
    instances (argmax over an empty axis), so only pairs where both maps hold instances are compared;
    the empty-map values are dessam's documented conventions, tested in test_empty_conventions.

    One artefact of their code, applied here rather than absorbed by the tolerance: get_fast_pq
    divides SQ by tp + 1e-6 (a guard for tp = 0), which is below the mean IoU of the matches by up
    to 1e-6, far above 1e-9. dessam reports the mean IoU itself, so the expected SQ and PQ are
    dessam's multiplied by tp / (tp + 1e-6). Their AJI also scores pairs with inter / (union + 1e-6);
    dessam scores them the same way on purpose (largest-IoU ties go to the larger pair), so AJI is
    compared as is.
    """
    gt, pred = pair
    assume(gt.any() and pred.any())
    their_gt = hovernet.remap_label(np.pad(gt, 1))
    their_pred = hovernet.remap_label(np.pad(pred, 1))
    tol = dict(rel=0, abs=1e-9)

    assert metrics.aji(gt, pred) == pytest.approx(hovernet.get_fast_aji(their_gt, their_pred), **tol)

    (dq, sq, pq), (paired_true, paired_pred, unpaired_true, unpaired_pred) = hovernet.get_fast_pq(
        their_gt, their_pred, match_iou=iou
    )
    ours = metrics.panoptic_quality(gt, pred, iou)
    assert len(paired_true) == len(paired_pred)
    assert (ours["tp"], ours["fp"], ours["fn"]) == (len(paired_true), len(unpaired_pred), len(unpaired_true))
    their_sq_offset = ours["tp"] / (ours["tp"] + 1e-6)
    assert ours["dq"] == pytest.approx(dq, **tol)
    assert ours["sq"] * their_sq_offset == pytest.approx(sq, **tol)
    assert ours["pq"] * their_sq_offset == pytest.approx(pq, **tol)


def test_aji_iou_tie_matches_hovernet(hovernet):
    """Exact IoU ties are rare in random maps; this one is settled by HoVer-Net's 1e-6 as by dessam's."""
    gt, pred = iou_tie_pair()
    assert metrics.aji(gt, pred) == pytest.approx(hovernet.get_fast_aji(gt, pred), rel=0, abs=1e-12)


def test_recall_by_size_counts_each_nucleus_in_the_bucket_of_its_longer_side():
    from dessam.metrics import pool_size_counts, recall_by_size

    gt = np.zeros((80, 80), np.int32)
    gt[2:8, 2:12] = 1      # 6 x 10: under 12
    gt[20:35, 2:10] = 2    # 15 x 8: 12-20
    gt[40:65, 40:50] = 3   # 25 x 10: 20-30
    gt[2:40, 40:70] = 4    # 38 x 30: 30 and over
    pred = np.zeros_like(gt)
    pred[gt == 2] = 9      # found exactly
    pred[40:65, 40:44] = 5  # a sliver of nucleus 3: IoU 0.4, not found
    pred[2:40, 40:70] = 7  # found
    counts = recall_by_size(gt, pred)
    assert counts == {"<12": {"n": 1, "found": 0}, "12-20": {"n": 1, "found": 1},
                      "20-30": {"n": 1, "found": 0}, ">=30": {"n": 1, "found": 1}}
    pooled = pool_size_counts([counts, recall_by_size(gt, gt), recall_by_size(np.zeros_like(gt), pred)])
    assert pooled["<12"] == {"n": 2, "found": 1, "recall": 0.5}
    assert pooled[">=30"] == {"n": 2, "found": 2, "recall": 1.0}
    assert pool_size_counts([recall_by_size(np.zeros_like(gt), pred)])["12-20"]["recall"] is None
