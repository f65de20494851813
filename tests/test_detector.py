"""The detector behaves as the authors' MMDetection configuration: RoI pooling scales, matching,
box head, test-time NMS."""

import torch
from scenes import tiny_config
from segment_anything.modeling.common import LayerNorm2d

from dessam.models.dessam import DESSAM
from dessam.models.matcher import MaxIoUMatcher
from dessam.models.sam import build_sam


def _model(**model_settings):
    config = tiny_config().replace({"model.score_threshold": 0.0,
                                    **{f"model.detector.{key}": value for key, value in model_settings.items()}})
    torch.manual_seed(0)
    return DESSAM(build_sam("tiny", image_size=config.model.image_size), config).eval()


def _pooled_for_square_image(model, features, first_sizes):
    """RoI features pooled for a square image after the detector has seen `first_sizes`."""
    pooled = []
    hook = model.detector.roi_heads.box_roi_pool.register_forward_hook(lambda m, i, out: pooled.append(out))
    model.detector.detect(features, first_sizes, model.image_size, 0.0, 100)
    pooled.clear()
    model.detector.detect(features, [(128, 128)], model.image_size, 0.0, 100)
    hook.remove()
    return pooled[0]


def test_the_same_box_pools_the_same_features_whatever_image_came_first():
    torch.manual_seed(1)
    embedding = torch.randn(1, 32, 16, 16)
    wide_first, square_first = _model(), _model()
    features = wide_first.neck(embedding)
    after_wide = _pooled_for_square_image(wide_first, features, [(64, 128)])  # a wide image: 64 x 128 of 128
    after_square = _pooled_for_square_image(square_first, features, [(128, 128)])
    assert after_wide.shape == after_square.shape and len(after_wide) > 0
    assert torch.allclose(after_wide, after_square)


def test_roi_align_is_half_pixel_aligned_and_levels_follow_mmdetection():
    model = _model()
    pool = model.detector.roi_heads.box_roi_pool
    assert pool.aligned and pool.sampling_ratio == 0
    boxes = torch.tensor([[0.0, 0, 50, 50], [0, 0, 112, 112], [0, 0, 230, 230], [0, 0, 500, 500]])
    assert pool.levels(boxes).tolist() == [0, 1, 2, 3]  # floor(log2(side / 56)), clamped
    assert _model(roi_align_aligned=False).detector.roi_heads.box_roi_pool.aligned is False


def test_box_head_convs_have_bias_and_no_normalisation_by_default():
    head = _model().detector.roi_heads.box_head
    convs = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4 and all(c.bias is not None for c in convs)
    norms = (LayerNorm2d, torch.nn.BatchNorm2d, torch.nn.GroupNorm, torch.nn.LayerNorm)
    assert not any(isinstance(m, norms) for m in head.modules())
    normalised = _model(box_head_norm="layernorm").detector.roi_heads.box_head
    assert sum(isinstance(m, LayerNorm2d) for m in normalised.modules()) == 4


def test_rpn_uses_its_test_nms_threshold_outside_training():
    rpn = _model(rpn_nms=0.7, rpn_nms_test=0.5).detector.rpn
    rpn.train()
    assert rpn.nms_thresh == 0.7
    rpn.eval()
    assert rpn.nms_thresh == 0.5


def test_low_quality_matches_need_the_minimum_iou():
    iou = torch.tensor([
        [0.35, 0.10, 0.00],   # box 0: best proposal 0 at 0.35
        [0.00, 0.20, 0.25],   # box 1: best proposal 2 at 0.25 (below 0.3)
    ])
    matches = MaxIoUMatcher(0.7, 0.3, min_pos_iou=0.3)(iou)
    assert matches.tolist() == [0, -1, -1]  # proposal 0 rescued; proposal 2 is not (0.25 < 0.3)
    off = MaxIoUMatcher(0.7, 0.3, min_pos_iou=None)(iou)
    assert off.tolist() == [-2, -1, -1]  # 0.35 lies between the thresholds: ignored
    # a proposal that is the best of a box goes to that box, not to the box it overlaps most
    iou = torch.tensor([[0.9, 0.2], [0.8, 0.1]])
    assert MaxIoUMatcher(0.7, 0.3, min_pos_iou=0.3)(iou).tolist()[0] == 1  # MMDetection: the later box wins


def test_the_detector_wires_the_authors_matchers():
    detector = _model().detector
    assert detector.rpn.proposal_matcher.min_pos_iou == 0.3
    assert detector.roi_heads.proposal_matcher.min_pos_iou == 0.5
