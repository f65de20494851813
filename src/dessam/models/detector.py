"""Faster R-CNN (one foreground class) on the feature pyramid, from torchvision's parts.

The parts (AnchorGenerator, RPNHead, RegionProposalNetwork, the conv+FC box head, RoIHeads'
sampling and post-processing, roi_align) are torchvision's. Where torchvision's defaults differ from
the authors' MMDetection configuration, the authors' behaviour is used: box regression is
class-agnostic; the box losses are L1 (on anchor deltas for the RPN, on decoded boxes for the RoI
head); low-quality matches need a minimum IoU (`MaxIoUMatcher`); RoIs pool with `aligned=True` at
scales fixed by the strides (`StridedRoIAlign`); the RPN has its own NMS threshold at test time.
The detector exposes the sampled proposals and their matched ground-truth boxes, which the
distillation needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import boxes as box_ops

from ..config import DetectorConfig
from .matcher import MaxIoUMatcher
from .roi_pool import StridedRoIAlign


class L1RegionProposalNetwork(RegionProposalNetwork):
    """torchvision's RPN with an L1 box loss on the anchor deltas, and its own NMS threshold at
    test time (the official ClusterSeg config uses 0.5 there and 0.7 in training)."""

    def __init__(self, *args, test_nms_thresh: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.test_nms_thresh = test_nms_thresh

    @property
    def nms_thresh(self) -> float:
        return self.train_nms_thresh if self.training else self.test_nms_thresh

    @nms_thresh.setter
    def nms_thresh(self, value: float) -> None:
        self.train_nms_thresh = value

    def compute_loss(self, objectness, pred_bbox_deltas, labels, regression_targets):
        sampled_pos, sampled_neg = self.fg_bg_sampler(labels)
        pos = torch.where(torch.cat(sampled_pos, dim=0))[0]
        neg = torch.where(torch.cat(sampled_neg, dim=0))[0]
        sampled = torch.cat([pos, neg], dim=0)
        labels = torch.cat(labels, dim=0)
        regression_targets = torch.cat(regression_targets, dim=0)
        box_loss = F.l1_loss(pred_bbox_deltas[pos], regression_targets[pos], reduction="sum") / max(sampled.numel(), 1)
        objectness_loss = F.binary_cross_entropy_with_logits(objectness.flatten()[sampled], labels[sampled])
        return objectness_loss, box_loss


class AgnosticBoxPredictor(nn.Module):
    """Class scores (background + nucleus) and one class-agnostic box per RoI.

    The box deltas are repeated for both classes so that torchvision's post-processing, which
    expects one box per class, can be used unchanged.
    """

    def __init__(self, in_features: int, num_classes: int = 2):
        super().__init__()
        self.num_classes = num_classes
        self.cls_score = nn.Linear(in_features, num_classes)
        self.bbox_pred = nn.Linear(in_features, 4)

    def forward(self, x: torch.Tensor):
        x = x.flatten(start_dim=1)
        deltas = self.bbox_pred(x)
        return self.cls_score(x), deltas, deltas.repeat(1, self.num_classes)


@dataclass
class SampledRois:
    """What the RoI sampler chose for one batch: proposals and the boxes they are matched to."""

    proposals: list          # per image (K, 4), input frame
    labels: list             # per image (K,), 1 = nucleus, 0 = background
    matched_gt_boxes: list   # per image (K, 4), the annotated box each proposal is matched to
    matched_index: list      # per image (K,), that box's index among the image's annotated boxes


class BoxDetector(nn.Module):
    def __init__(self, config: DetectorConfig, in_channels: int, strides: list):
        super().__init__()
        levels = [str(i) for i in range(len(strides))]
        anchors = AnchorGenerator(
            sizes=tuple(tuple(float(config.anchor_scale * s * o) for o in config.anchor_octave_scales) for s in strides),
            aspect_ratios=(tuple(config.anchor_ratios),) * len(strides),
        )
        self.rpn = L1RegionProposalNetwork(
            anchors,
            RPNHead(in_channels, anchors.num_anchors_per_location()[0], conv_depth=config.rpn_convs),
            fg_iou_thresh=config.rpn_fg_iou,
            bg_iou_thresh=config.rpn_bg_iou,
            batch_size_per_image=config.rpn_batch_per_image,
            positive_fraction=config.rpn_positive_fraction,
            pre_nms_top_n=dict(training=config.rpn_pre_nms_train, testing=config.rpn_pre_nms_test),
            post_nms_top_n=dict(training=config.rpn_post_nms_train, testing=config.rpn_post_nms_test),
            nms_thresh=config.rpn_nms,
            test_nms_thresh=config.rpn_nms_test,
        )
        self.rpn.proposal_matcher = MaxIoUMatcher(config.rpn_fg_iou, config.rpn_bg_iou, config.rpn_min_pos_iou)
        size = config.roi_size
        norms = {"none": None, "layernorm": LayerNorm2d}
        box_head = FastRCNNConvFCHead(
            (in_channels, size, size), [in_channels] * config.box_head_convs, [config.box_head_fc],
            norm_layer=norms[config.box_head_norm],
        )
        self.roi_heads = RoIHeads(
            StridedRoIAlign(levels, strides, output_size=size, sampling_ratio=0, aligned=config.roi_align_aligned,
                            finest_scale=config.roi_finest_scale),
            box_head,
            AgnosticBoxPredictor(config.box_head_fc),
            fg_iou_thresh=config.roi_fg_iou,
            bg_iou_thresh=config.roi_fg_iou,
            batch_size_per_image=config.roi_batch_per_image,
            positive_fraction=config.roi_positive_fraction,
            bbox_reg_weights=None,
            score_thresh=0.0,  # not used: `detect` takes the score threshold and the detection limit per call
            nms_thresh=config.detection_nms,
            detections_per_img=1,
        )
        self.roi_heads.proposal_matcher = MaxIoUMatcher(config.roi_fg_iou, config.roi_fg_iou, config.roi_min_pos_iou)

    @staticmethod
    def image_list(features: dict, image_sizes: list, padded_size: int) -> ImageList:
        """An ImageList that carries only shapes: the detector never sees the pixels."""
        first = next(iter(features.values()))
        placeholder = first.new_zeros(()).expand(first.shape[0], 1, padded_size, padded_size)
        return ImageList(placeholder, [tuple(int(v) for v in s) for s in image_sizes])

    def _box_features(self, features, proposals):
        pooled = self.roi_heads.box_roi_pool(features, proposals)
        return self.roi_heads.box_predictor(self.roi_heads.box_head(pooled))

    def forward_train(self, features: dict, image_sizes: list, padded_size: int, gt_boxes: list):
        """Detector losses and the sampled RoIs (with their matched annotated boxes)."""
        images = self.image_list(features, image_sizes, padded_size)
        targets = [
            {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64, device=boxes.device)}
            for boxes in gt_boxes
        ]
        proposals, rpn_losses = self.rpn(images, features, targets)
        proposals, matched_idxs, labels, _ = self.roi_heads.select_training_samples(proposals, targets)
        matched = [
            gt[idx.clamp(min=0)] if len(gt) else torch.zeros_like(props)
            for gt, idx, props in zip(gt_boxes, matched_idxs, proposals)
        ]
        class_logits, deltas, _ = self._box_features(features, proposals)
        all_labels = torch.cat(labels)
        all_proposals = torch.cat(proposals)
        all_matched = torch.cat(matched)
        roi_cls = F.cross_entropy(class_logits, all_labels)
        positive = torch.where(all_labels > 0)[0]
        decoded = self.roi_heads.box_coder.decode_single(deltas[positive], all_proposals[positive])
        roi_box = F.l1_loss(decoded, all_matched[positive], reduction="sum") / max(all_labels.numel(), 1)
        losses = {
            "rpn_cls": rpn_losses["loss_objectness"],
            "rpn_box": rpn_losses["loss_rpn_box_reg"],
            "roi_cls": roi_cls,
            "roi_box": roi_box,
        }
        return losses, SampledRois(proposals, labels, matched, matched_idxs)

    @torch.no_grad()
    def detect(self, features: dict, image_sizes: list, padded_size: int, score_threshold: float,
               max_detections: int):
        """Final boxes (input frame) and scores per image: scores > `score_threshold`, NMS, the
        `max_detections` best. The thresholds are given per call, never kept in the module."""
        images = self.image_list(features, image_sizes, padded_size)
        proposals, _ = self.rpn(images, features)
        class_logits, _, box_regression = self._box_features(features, proposals)
        heads = self.roi_heads
        boxes = heads.box_coder.decode(box_regression, proposals)
        scores = F.softmax(class_logits, -1)
        found_boxes, found_scores = [], []
        for image_boxes, image_scores, shape in zip(boxes.split([len(p) for p in proposals]),
                                                    scores.split([len(p) for p in proposals]), images.image_sizes):
            image_boxes = box_ops.clip_boxes_to_image(image_boxes, shape)[:, 1:].reshape(-1, 4)
            image_scores = image_scores[:, 1:].reshape(-1)
            keep = torch.where(image_scores > score_threshold)[0]
            image_boxes, image_scores = image_boxes[keep], image_scores[keep]
            keep = box_ops.remove_small_boxes(image_boxes, min_size=1e-2)
            image_boxes, image_scores = image_boxes[keep], image_scores[keep]
            labels = torch.ones_like(image_scores, dtype=torch.int64)  # torchvision's own call, for identical results
            keep = box_ops.batched_nms(image_boxes, image_scores, labels, heads.nms_thresh)[:max_detections]
            found_boxes.append(image_boxes[keep])
            found_scores.append(image_scores[keep])
        return found_boxes, found_scores
