"""SAM's frozen mask decoder prompted with boxes, optionally with one learnable prompt token.

Teacher and student share the very same frozen `MaskDecoder` and `PromptEncoder` of Meta's SAM.
The student adds one learnable 256-d token to the decoder's output-token sequence, after the IoU
and mask tokens and before the sparse (box-corner) prompt tokens; it starts as SAM's "not a point"
padding embedding, so that the student begins close to the teacher (the authors' `nn.Embedding`
starts N(0, 1): `token_init="normal"`). Without that token the
computation is exactly `MaskDecoder.predict_masks` (single-mask output, first mask token), which
is what the teacher uses. This module re-sequences SAM's sub-modules; it does not copy them.
"""

from __future__ import annotations

from typing import Optional

import torch
from segment_anything.modeling import Sam
from torch import nn

# not-a-point: a copy of SAM's padding token (dessam); normal: nn.Embedding's N(0, 1) (the authors')
TOKEN_INITS = ("not-a-point", "normal")


class PromptedMaskDecoder(nn.Module):
    def __init__(self, sam: Sam, prompt_token: bool = True, token_init: str = "not-a-point"):
        super().__init__()
        # Held in a plain list so the frozen SAM modules are not registered twice as sub-modules.
        self._sam = [sam]
        dim = sam.mask_decoder.transformer_dim
        if token_init not in TOKEN_INITS:
            raise ValueError(f"model.prompt_token_init: unknown '{token_init}'; use {' or '.join(TOKEN_INITS)}")
        self.prompt_token = nn.Embedding(1, dim) if prompt_token else None  # nn.Embedding starts N(0, 1)
        if self.prompt_token is not None and token_init == "not-a-point":
            # Start as SAM's own "not a point" padding token, which its decoder learned to pass over:
            # the student then begins close to the teacher instead of disturbed by a random token.
            with torch.no_grad():
                self.prompt_token.weight.copy_(sam.prompt_encoder.not_a_point_embed.weight)

    @property
    def sam(self) -> Sam:
        return self._sam[0]

    def forward(
        self,
        embeddings: torch.Tensor,
        boxes: torch.Tensor,
        image_index: Optional[torch.Tensor] = None,
        use_token: bool = True,
    ):
        """Low-resolution mask logits (N, 1, 4h, 4w) and IoU predictions (N, 1) for N boxes.

        embeddings: (B, C, h, w) image embeddings; boxes: (N, 4) x1y1x2y2 in the model's input
        frame; image_index: (N,) which embedding each box belongs to (default: all image 0).
        """
        sam = self.sam
        decoder = sam.mask_decoder
        n = boxes.shape[0]
        if n == 0:
            h, w = embeddings.shape[-2:]
            return embeddings.new_zeros((0, 1, 4 * h, 4 * w)), embeddings.new_zeros((0, 1))
        sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
        tokens = [decoder.iou_token.weight, decoder.mask_tokens.weight]
        if use_token and self.prompt_token is not None:
            tokens.append(self.prompt_token.weight)
        output_tokens = torch.cat(tokens, dim=0).unsqueeze(0).expand(n, -1, -1)
        tokens = torch.cat((output_tokens, sparse), dim=1)

        if image_index is None:
            src = embeddings[:1].expand(n, -1, -1, -1)
        else:
            src = embeddings[image_index]
        src = src + dense
        pos_src = sam.prompt_encoder.get_dense_pe().expand(n, -1, -1, -1)
        b, c, h, w = src.shape
        hs, src = decoder.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        first_mask_token = hs[:, 1, :]
        src = src.transpose(1, 2).reshape(b, c, h, w)
        upscaled = decoder.output_upscaling(src)
        hyper = decoder.output_hypernetworks_mlps[0](first_mask_token)
        b, c, h, w = upscaled.shape
        masks = (hyper.unsqueeze(1) @ upscaled.view(b, c, h * w)).view(b, 1, h, w)
        iou = decoder.iou_prediction_head(iou_token_out)[:, :1]
        return masks, iou
