"""The frozen SAM prompted with boxes, without a detector: DES-SAM's teacher on its own; and
`SegmentsBoxes`, what the inference pipeline asks of any model that segments boxes.

What the inference pipeline (`dessam.inference.predictor.Predictor`) needs to segment given boxes
is an image encoder and a box-prompted decoder; `DESSAM` adds a detector and a learned token to
those. `PromptableSam` is the two without the rest, so that boxes can be segmented by SAM itself
(`dessam label` without a trained model). It has nothing to train.
"""

from __future__ import annotations

from typing import Optional

import torch
from segment_anything.modeling import Sam
from torch import nn

from .prompted_decoder import PromptedMaskDecoder


class SegmentsBoxes:
    """The calls of a model that segments boxes (mixed into `PromptableSam` and `DESSAM`), so that
    the Predictor runs a model without reaching into its parts: `image_encoder`, `decode`,
    `trim_multiple` and `reads_embeddings` (with `unread_embeddings` in their place when nothing reads
    them). A model with a detector adds `detect`."""

    @property
    def image_encoder(self) -> nn.Module:
        return self.sam.image_encoder

    @property
    def trim_multiple(self) -> Optional[int]:
        """What the side of an input encoded without its zero padding must divide by, or None when
        the encoder must read whole inputs (see `dessam.inference.pipeline.Encoded`)."""
        return None

    @property
    def reads_embeddings(self) -> bool:
        """Whether anything of the model reads SAM's whole-image embeddings: not a decoder that encodes
        each box on a view of its own (`dessam.models.box_views`), which reads the images."""
        return self.decoder.views is None

    def unread_embeddings(self, batch: int, device) -> torch.Tensor:
        """Zeros of the embeddings' shape (no memory of their own), in their place when nothing reads them."""
        grid = tuple(int(v) for v in self.sam.prompt_encoder.image_embedding_size)
        channels = int(self.sam.prompt_encoder.embed_dim)
        return torch.zeros((1, channels) + grid, device=device).expand(batch, -1, -1, -1)

    @torch.no_grad()
    def decode(self, embeddings: torch.Tensor, boxes: torch.Tensor, owner: torch.Tensor, use_token: bool = True,
               margin: Optional[int] = None, images: Optional[torch.Tensor] = None, decoder=None):
        """SAM's decoder prompted with `boxes` (N, 4, input frame) of the images `owner` names, each
        on the window `self.decoder.windows` gives it (`margin` tokens around it; None: the whole
        embedding): `DecodedMasks`. `decoder`: what runs `self.decoder` (a compiled wrapper of it,
        `dessam.inference.acceleration.maybe_compile`); default the module itself."""
        origins, size = self.decoder.windows(boxes, margin)
        run = self.decoder if decoder is None else decoder
        return run(embeddings, boxes, owner, use_token=use_token, origins=origins, size=size, images=images)


class PromptableSam(SegmentsBoxes, nn.Module):
    def __init__(self, sam: Sam):
        super().__init__()
        self.sam = sam
        for parameter in sam.parameters():
            parameter.requires_grad_(False)
        self.image_size = int(sam.image_encoder.img_size)
        self.decoder = PromptedMaskDecoder(sam, prompt_token=False)
        self.eval()
