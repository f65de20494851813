"""The model's networks in the form `dessam export` writes as ONNX graphs.

Each graph is a module over the model's own sub-modules and weights (nothing is copied), with
inputs and outputs that are plain tensors and no Python control flow that depends on the data, so
that tracing records what runs for every input:

- `EncoderGraph`: normalised images (B, 3, S, S) -> SAM embeddings (B, C, h, w).
- `DetectorGraph`: one embedding (1, C, h, w), or for a detector with an image encoder of its own
  (`model.detector_encoder: own`) one normalised image (1, 3, s, s) and that encoder, the valid
  (unpadded) height and width of its image in the input, a score threshold and a detection limit ->
  the detector's boxes (N, 4, x1y1x2y2 in the input frame) and scores (N,). Everything
  `BoxDetector.detect` does is in the graph: the neck, the RPN head, its anchors (constants of the
  full input, of which the embedding of a trimmed input, `dessam.inference.pipeline.Encoded`, takes
  the top left), box decoding, the best proposals of each level, NMS per level, the RoI level of
  each proposal, RoIAlign, the box head, the final boxes, the score threshold and NMS. What differs
  from the PyTorch engine is float rounding and the order of exact ties.
- `SizeGraph`: crops of an image at its own resolution and their valid height and width -> the log
  of their typical nucleus side (`dessam.models.size_head`), for models with `nucleus` scaling.
- `DecoderGraph`: the mask decoder prompted with boxes (N, 4, input frame) of the images they
  belong to (`image_index`), with the `tokens` (T, C) added to SAM's output tokens (the learned
  prompt token, or none for the frozen teacher) -> low-resolution logits (N, 1, k, k) over each
  box's window of the full frame, SAM's predicted IoU (N, 1) and the windows' origins (N, 2, in
  logits of the frame). It reads the embeddings, or, for a teacher that decodes each box on a view
  of its own (`dessam.models.box_views`), the normalised images: the view cut, the view encoder and
  the decoder are one graph. The windows are computed in the graph (`window_origins`), one size per
  call, as the PyTorch engine computes them per chunk of prompts.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torchvision.models.detection._utils import _topk_min
from torchvision.models.detection.rpn import permute_and_flatten
from torchvision.ops import nms, roi_align

from .box_views import views_to_windows
from .prompted_decoder import UPSCALE, _gather_windows, window_origins


class EncoderGraph(nn.Module):
    def __init__(self, image_encoder: nn.Module):
        super().__init__()
        self.image_encoder = image_encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(images)


def _clip(boxes: torch.Tensor, valid_hw: torch.Tensor) -> torch.Tensor:
    """Boxes (K, 4) clipped to [0, width] x [0, height] (valid_hw: (2,) float, height and width)."""
    x = torch.minimum(boxes[:, 0::2].clamp(min=0), valid_hw[1])
    y = torch.minimum(boxes[:, 1::2].clamp(min=0), valid_hw[0])
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)


def _not_small(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    return ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)


class DetectorGraph(nn.Module):
    """`BoxDetector.detect` of one image (see the module docstring)."""

    def __init__(self, neck: nn.Module, detector: nn.Module, image_size: int, embedding_shape: tuple,
                 encoder: Optional[nn.Module] = None):
        super().__init__()
        self.encoder = encoder
        self.neck = neck
        self.detector = detector
        rpn = detector.rpn
        with torch.no_grad():  # the anchors of the fixed input size, per level
            by_name = neck(torch.zeros((1,) + tuple(embedding_shape)))
            features = list(by_name.values())
            anchors = rpn.anchor_generator(detector.image_list(by_name, [(image_size, image_size)], image_size),
                                           features)[0]
        per_place = rpn.anchor_generator.num_anchors_per_location()[0]
        sizes = [int(f.shape[-2] * f.shape[-1]) * per_place for f in features]
        for level, (feature, level_anchors) in enumerate(zip(features, anchors.split(sizes))):
            grid = tuple(feature.shape[-2:]) + (per_place, 4)  # (h, w, anchors, 4): a smaller map takes its top left
            self.register_buffer(f"anchors_{level}", level_anchors.reshape(grid).clone(), persistent=False)
        self.levels = len(sizes)
        self.pre_nms = int(rpn._pre_nms_top_n["testing"])
        self.post_nms = int(rpn._post_nms_top_n["testing"])

    def forward(self, source: torch.Tensor, valid_hw: torch.Tensor, score_threshold: torch.Tensor,
                max_detections: torch.Tensor) -> tuple:
        rpn, heads = self.detector.rpn, self.detector.roi_heads
        embedding = source if self.encoder is None else self.encoder(source)
        features = list(self.neck(embedding).values())
        objectness, deltas = rpn.head(features)
        boxes, scores = [], []
        for level in range(self.levels):
            n, ac, h, w = objectness[level].shape
            logits = permute_and_flatten(objectness[level], n, ac, 1, h, w).reshape(-1)
            level_deltas = permute_and_flatten(deltas[level], n, ac, 4, h, w).reshape(-1, 4)
            top, index = logits.topk(_topk_min(logits, self.pre_nms, 0))
            anchors = getattr(self, f"anchors_{level}")[:h, :w].reshape(-1, 4)
            level_boxes = _clip(rpn.box_coder.decode_single(level_deltas[index], anchors[index]), valid_hw)
            level_scores = torch.sigmoid(top)
            keep = torch.where(_not_small(level_boxes, rpn.min_size) & (level_scores >= rpn.score_thresh))[0]
            level_boxes, level_scores = level_boxes[keep], level_scores[keep]
            keep = nms(level_boxes, level_scores, rpn.nms_thresh)
            boxes.append(level_boxes[keep])
            scores.append(level_scores[keep])
        proposals, proposal_scores = torch.cat(boxes), torch.cat(scores)
        order = proposal_scores.argsort(descending=True)[:self.post_nms]
        proposals = proposals[order]

        pool = heads.box_roi_pool
        levels = pool.levels(proposals)
        rois = torch.cat([torch.zeros_like(proposals[:, :1]), proposals], dim=1)
        pooled = features[0].new_zeros((proposals.shape[0], features[0].shape[1]) + pool.output_size)
        for level, (feature, scale) in enumerate(zip(features, pool.scales)):
            chosen = torch.where(levels == level)[0]
            pooled[chosen] = roi_align(feature, rois[chosen], pool.output_size, spatial_scale=scale,
                                       sampling_ratio=pool.sampling_ratio, aligned=pool.aligned)
        class_logits, _, box_regression = heads.box_predictor(heads.box_head(pooled))
        found = _clip(heads.box_coder.decode_single(box_regression, proposals)[:, 4:], valid_hw)
        found_scores = torch.softmax(class_logits, -1)[:, 1]
        keep = torch.where((found_scores > score_threshold) & _not_small(found, 1e-2))[0]
        found, found_scores = found[keep], found_scores[keep]
        # torchvision's batched_nms of one class below 1000 boxes: the boxes shifted by their largest
        # coordinate + 1 (clipped boxes are >= 0, so the 0 added for an empty set changes nothing)
        shifted = found + (torch.cat([found.flatten(), found.new_zeros(1)]).max() + 1)
        keep = nms(shifted, found_scores, heads.nms_thresh)  # by descending score
        keep = keep[(torch.cumsum(torch.ones_like(keep), 0) - 1) < max_detections]
        return found[keep], found_scores[keep]


class DecoderGraph(nn.Module):
    """The prompted mask decoder over windows it computes itself (see the module docstring)."""

    def __init__(self, decoder: nn.Module, margin: Optional[int]):
        super().__init__()
        self.decoder = decoder
        self.margin = decoder.grid if margin is None else int(margin)  # None: the whole grid

    def forward(self, source: torch.Tensor, boxes: torch.Tensor, image_index: torch.Tensor,
                tokens: torch.Tensor) -> tuple:
        decoder = self.decoder
        sam = decoder.sam
        if decoder.views is not None:
            logits, iou, squares = decoder.decode_views_with(source, boxes, image_index, tokens)
            origins, size = window_origins(squares, decoder.stride, decoder.grid, 0)
            windows = views_to_windows(logits, squares, origins * UPSCALE, UPSCALE * size, decoder.stride / UPSCALE)
            return windows, iou, origins * UPSCALE
        origins, size = window_origins(boxes, decoder.stride, decoder.grid, self.margin)
        sparse, _ = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
        src = _gather_windows(source, image_index, origins, size)
        pos_src = _gather_windows(sam.prompt_encoder.get_dense_pe(), torch.zeros_like(image_index), origins, size)
        logits, iou = decoder.decode_tokens(src, pos_src, sparse, tokens)
        return logits, iou, origins * UPSCALE


class SizeGraph(nn.Module):
    """Image encoder and size head as one graph (`dessam export`): crops (B, 3, P, P), SAM-normalised and
    zero-padded, and the height and width of each crop inside them (B, 2, pixels) -> log nucleus side (B,)."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, images: torch.Tensor, valid_hw: torch.Tensor) -> torch.Tensor:
        embeddings = self.encoder(images)
        stride = images.shape[-1] / embeddings.shape[-1]
        return self.head(embeddings, torch.ceil(valid_hw / stride))
