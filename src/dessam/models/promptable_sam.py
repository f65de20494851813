"""The frozen SAM prompted with boxes, without a detector: DES-SAM's teacher on its own.

What the inference pipeline (`dessam.inference.predictor.Predictor`) needs to segment given boxes
is an image encoder and a box-prompted decoder; `DESSAM` adds a detector and a learned token to
those. This module is the two without the rest, so that boxes can be segmented by SAM itself
(`dessam label` without a trained model). It has nothing to train.
"""

from __future__ import annotations

from segment_anything.modeling import Sam
from torch import nn

from .prompted_decoder import PromptedMaskDecoder


class PromptableSam(nn.Module):
    def __init__(self, sam: Sam):
        super().__init__()
        self.sam = sam
        for parameter in sam.parameters():
            parameter.requires_grad_(False)
        self.image_size = int(sam.image_encoder.img_size)
        self.decoder = PromptedMaskDecoder(sam, prompt_token=False)
        self.eval()
