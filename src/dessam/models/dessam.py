"""The DES-SAM model: frozen SAM + trained detector + self-distilled prompt token.

Trainable: the feature-pyramid neck, the RPN, the RoI box head and the one prompt token; with
`model.detector_encoder: own` also the detector's own image encoder (a copy of SAM's, which the detector
then reads instead of SAM's embedding); with `nucleus` scaling also a nucleus-size head
(`dessam.models.size_head`), trained on its own stage and left out of the detector's optimiser.
Everything of SAM stays frozen. Training works on SAM's image embeddings (which can be cached), never
on pixels, except for the edge-aware loss, which needs the image colours, and the detector's own
encoder.
"""

from __future__ import annotations

import copy
import math
from typing import Optional

import torch
from segment_anything.modeling import Sam
from torch import nn

from ..config import Config
from .losses import distillation_losses, edge_aware_losses, valid_region
from .detector import BoxDetector
from .frame_masks import distillation_targets
from .neck import SimpleFeaturePyramid
from .promptable_sam import SegmentsBoxes
from .prompted_decoder import PromptedMaskDecoder, decoding_margin
from .size_head import NucleusSizeHead, fixed_input_side

TRAINABLE_PREFIXES = ("detector_encoder.", "neck.", "detector.", "decoder.prompt_token.", "size_head.")
OWN_STAGE_PREFIXES = ("size_head.",)  # trained on its own (`dessam.training.size_head`), not with the detector
ENCODER_MULTIPLE = 16  # the bundled encoders' coarsest stride: a trimmed input's side divides by it
LOSS_NAMES = ("rpn_cls", "rpn_box", "roi_cls", "roi_box", "distill_bce", "distill_dice", "edge_local", "edge_global")


def positive_proposals(rois, max_prompts: int) -> tuple:
    """The detector's positive proposals (at most `max_prompts` per image), each with the annotated box
    it matched, that box's index in its image and the image's index: the student's and the teacher's
    prompts."""
    proposals, matched, matched_index, image_index = [], [], [], []
    for i, (props, labels, gts, idx) in enumerate(zip(rois.proposals, rois.labels, rois.matched_gt_boxes,
                                                      rois.matched_index)):
        positive = torch.where(labels > 0)[0][:max_prompts]
        proposals.append(props[positive])
        matched.append(gts[positive])
        matched_index.append(idx[positive])
        image_index.append(torch.full((len(positive),), i, dtype=torch.long, device=props.device))
    return torch.cat(proposals).detach(), torch.cat(matched), torch.cat(matched_index), torch.cat(image_index)


def own_encoder(image_encoder: nn.Module) -> nn.Module:
    """A trainable copy of SAM's `image_encoder` for the detector (`model.detector_encoder: own`): it starts
    from the teacher's weights, so the detector starts from features that already know nuclei."""
    encoder = copy.deepcopy(image_encoder)
    for parameter in encoder.parameters():
        parameter.requires_grad_(True)
    return encoder


class DESSAM(SegmentsBoxes, nn.Module):
    def __init__(self, sam: Sam, config: Config):
        super().__init__()
        self.config = config
        self.sam = sam
        for parameter in sam.parameters():
            parameter.requires_grad_(False)
        sam.eval()
        self.image_size = int(sam.image_encoder.img_size)
        grid = int(sam.prompt_encoder.image_embedding_size[0])
        self.embedding_stride = self.image_size // grid
        channels = int(sam.prompt_encoder.embed_dim)
        model = config.model
        self.detector_encoder = own_encoder(sam.image_encoder) if model.detector_encoder == "own" else None
        self.neck = SimpleFeaturePyramid(channels, model.neck_channels, self.embedding_stride, model.neck_finest_stride,
                                         model.neck_convs)
        self.detector = BoxDetector(model.detector, model.neck_channels, self.neck.strides)
        self.decoder = PromptedMaskDecoder(sam, model.prompt_token, model.prompt_token_init)
        self.size_head = NucleusSizeHead(channels) if model.input_scaling == "nucleus" else None

    def train(self, mode: bool = True):
        super().train(mode)
        self.sam.eval()  # SAM is frozen: never in training mode
        return self

    # ----- what training changes -------------------------------------------------------------
    def trainable_state_dict(self) -> dict:
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k.startswith(TRAINABLE_PREFIXES)}

    def load_trainable_state_dict(self, state: dict) -> None:
        expected = set(self.trainable_state_dict())
        missing = expected - set(state)
        unexpected = set(state) - expected
        if missing or unexpected:
            raise KeyError(f"missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}")
        self.load_state_dict(state, strict=False)

    def trainable_parameters(self):
        """What the detector's training changes (not the parts trained on their own stage)."""
        return [p for n, p in self.named_parameters()
                if n.startswith(TRAINABLE_PREFIXES) and not n.startswith(OWN_STAGE_PREFIXES)]

    # ----- SAM pieces ------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images_normalised: torch.Tensor) -> torch.Tensor:
        """SAM's image embedding of padded, normalised images (B, 3, S, S)."""
        return self.sam.image_encoder(images_normalised)

    # ----- inference -------------------------------------------------------------------------
    @property
    def trim_multiple(self) -> Optional[int]:
        """What the side of an input encoded without its zero padding must divide by (every stride
        of the encoder and the pyramid), or None: a fixed-size encoder (a ViT) or a decoder that
        reads the embeddings, not per-box views (see `dessam.inference.pipeline.Encoded`)."""
        if fixed_input_side(self.image_encoder) or self.decoder.views is None:
            return None
        return math.lcm(ENCODER_MULTIPLE, *self.neck.strides)

    @property
    def reads_embeddings(self) -> bool:
        """Whether anything reads SAM's whole-image embeddings at prediction: the detector, unless it has an
        encoder of its own, or a decoder that is not of per-box views."""
        return self.detector_encoder is None or super().reads_embeddings

    def detector_input(self, embeddings: torch.Tensor, images_normalised: torch.Tensor) -> torch.Tensor:
        """What the detector's pyramid reads: SAM's `embeddings`, or with an encoder of its own its
        encoding of the same (normalised) images."""
        return embeddings if self.detector_encoder is None else self.detector_encoder(images_normalised)

    @torch.no_grad()
    def detect(self, embeddings: torch.Tensor, image_sizes: list, input_side: int, score_threshold: float,
               max_detections: int) -> tuple:
        """Per image, boxes (input frame) and scores of the nuclei found in `embeddings` (what
        `detector_input` gives) of inputs whose top-left `input_side` square was encoded (images of
        `image_sizes` inside it): scores above `score_threshold`, NMS, the `max_detections` best."""
        return self.detector.detect(self.neck(embeddings), image_sizes, input_side, score_threshold, max_detections)

    # ----- training --------------------------------------------------------------------------
    def forward(self, embeddings, images_rgb, images_normalised, gt_boxes, image_sizes, gt_masks=None):
        """All DES-SAM losses for one batch (a dict of scalar tensors, unweighted).

        gt_masks: per image, the given masks of its annotations (`FrameMasks`, or None for boxes
        only): the proposals matched to a masked annotation learn its mask, not the teacher's.
        """
        loss_config = self.config.loss
        features = self.neck(self.detector_input(embeddings, images_normalised))
        losses, rois = self.detector.forward_train(features, image_sizes, self.image_size, gt_boxes)

        proposals, matched, matched_index, image_index = positive_proposals(rois, loss_config.distill_max_prompts)

        zero = embeddings.sum() * 0
        if len(proposals) == 0:
            losses.update(distill_bce=zero, distill_dice=zero, edge_local=zero, edge_global=zero)
            return losses
        # Teacher and student of one pair share a window (local decoding) so their logits line up.
        pairs = torch.cat([torch.minimum(matched[:, :2], proposals[:, :2]), torch.maximum(matched[:, 2:], proposals[:, 2:])], 1)
        margin = decoding_margin(self.config, self.sam)
        origins, size = self.decoder.windows(pairs, margin)
        with torch.no_grad():
            teacher = self.decoder(embeddings, matched, image_index, use_token=False, origins=origins, size=size,
                                   images=images_normalised)
        student = self.decoder(embeddings, proposals, image_index, use_token=True, origins=origins, size=size,
                               images=images_normalised)
        frame_pixels = student.frame[0] * student.frame[1]
        targets = weights = None
        if gt_masks is not None:
            targets, supervised = distillation_targets(teacher, image_index, matched_index, gt_masks)
            if supervised.any():
                weights = torch.where(supervised, loss_config.mask_weight, 1.0).to(student.logits.dtype)
            else:
                targets = None
        losses["distill_bce"], losses["distill_dice"] = distillation_losses(
            student.logits, teacher.logits, images=len(image_sizes), frame_pixels=frame_pixels,
            targets=targets, weights=weights)
        if loss_config.edge_aware:
            crop_boxes = {"annotated": matched, "proposal": proposals}
            images = {"rgb": None, "normalised": images_normalised}
            valid = valid_region(image_sizes, self.image_size, loss_config.edge_bottom_rows, embeddings.device)
            logits_per_pixel = student.frame[-1] / self.image_size
            losses["edge_local"], losses["edge_global"] = edge_aware_losses(
                student.logits, crop_boxes[loss_config.edge_crop_box], matched, image_index, images_rgb, valid,
                images[loss_config.edge_global_image], crop=loss_config.edge_crop,
                dilation=loss_config.edge_dilation, mask_dilation=loss_config.edge_mask_dilation, tau=loss_config.edge_tau,
                logits_scale=logits_per_pixel, logits_origins=student.origins.flip(1) / logits_per_pixel,
            )
        else:
            losses["edge_local"] = losses["edge_global"] = zero
        return losses

    def weighted_total(self, losses: dict) -> torch.Tensor:
        weights = self.config.loss
        return sum(getattr(weights, name) * value for name, value in losses.items())
