"""SAM's frozen mask decoder prompted with boxes, optionally with one learnable prompt token.

Teacher and student share the very same frozen `MaskDecoder` and `PromptEncoder` of Meta's SAM.
The student adds one learnable 256-d token to the decoder's output-token sequence, after the IoU
and mask tokens and before the sparse (box-corner) prompt tokens; it starts as SAM's "not a point"
padding embedding, so that the student begins close to the teacher (the authors' `nn.Embedding`
starts N(0, 1): `token_init="normal"`). Without that token the computation is exactly
`MaskDecoder.predict_masks` (single-mask output, first mask token), which is what the teacher uses.
This module re-sequences SAM's sub-modules; it does not copy them.

Local decoding: a nucleus's mask depends mostly on the embedding around its box. Given a window of
the embedding grid per prompt, the decoder attends over that window only, with the positional
encoding of the window's true place, and returns the low-resolution logits of the window; the cost
then no longer grows with the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from segment_anything.modeling import Sam
from torch import nn

from ..geometry.mapping import OUTSIDE
from .box_views import cut_views, boxes_in_views, view_squares, views_to_windows

UPSCALE = 4  # SAM's decoder upsamples the embedding grid 4 x into its low-resolution logits


@dataclass
class DecodedMasks:
    """Low-resolution logits of N prompts, each over a square window of the full low-res frame."""

    logits: torch.Tensor    # (N, 1, k, k)
    iou: torch.Tensor       # (N, 1) SAM's predicted IoU
    origins: torch.Tensor   # (N, 2) long: row, column of each window's first logit in the full frame
    frame: tuple            # (H, W) of the full low-res frame (4 x the embedding grid)

    def __len__(self) -> int:
        return len(self.logits)

    @property
    def full(self) -> bool:
        return tuple(self.logits.shape[-2:]) == tuple(self.frame)

    def to_frame(self) -> torch.Tensor:
        """(N, 1, H, W) logits over the full frame, `OUTSIDE` beyond each prompt's window."""
        if self.full:
            return self.logits
        out = self.logits.new_full((len(self.logits), 1) + tuple(self.frame), OUTSIDE)
        k = self.logits.shape[-1]
        for index, (row, col) in enumerate(self.origins.tolist()):
            out[index, :, row:row + k, col:col + k] = self.logits[index]
        return out


def window_origins(boxes: torch.Tensor, stride: int, grid: int, margin: int) -> tuple:
    """(origins (N, 2) long, size: a 0-d long tensor) of square windows of the embedding grid, one
    per box (N, 4, x1y1x2y2 in the input frame), each holding its box plus `margin` tokens on every
    side; one size for all (the largest needed, at most the grid). Tensor operations only, so that
    an exported graph computes its windows itself."""
    lo = torch.floor(boxes[:, :2] / stride).long() - margin         # x, y of the first token
    hi = torch.ceil(boxes[:, 2:] / stride).long() + margin          # past the last token
    own = (hi - lo).clamp(min=1)
    size = own.max().clamp(max=grid)
    start = lo - (size - own) // 2
    start = torch.minimum(start.clamp(min=0), grid - size)
    return start.flip(1), size                                       # (row, col)


def prompt_windows(boxes: torch.Tensor, stride: int, grid: int, margin: int) -> tuple:
    """(origins (N, 2) long, size) of `window_origins`, the size as an int; `(None, grid)` when the
    windows would cover the whole grid."""
    if not len(boxes):
        return None, grid
    origins, size = window_origins(boxes, stride, grid, margin)
    if int(size) >= grid:
        return None, grid
    return origins, int(size)


class PromptedMaskDecoder(nn.Module):
    def __init__(self, sam: Sam, prompt_token: bool = True, token_init: str = "not-a-point"):
        """token_init (`model.prompt_token_init`): "not-a-point", a copy of SAM's padding token
        (dessam), or "normal", nn.Embedding's N(0, 1) (the authors')."""
        super().__init__()
        # Held in a plain list so the frozen SAM modules are not registered twice as sub-modules.
        self._sam = [sam]
        dim = sam.mask_decoder.transformer_dim
        self.prompt_token = nn.Embedding(1, dim) if prompt_token else None  # nn.Embedding starts N(0, 1)
        if self.prompt_token is not None and token_init == "not-a-point":
            # Start as SAM's own "not a point" padding token, which its decoder learned to pass over:
            # the student then begins close to the teacher instead of disturbed by a random token.
            with torch.no_grad():
                self.prompt_token.weight.copy_(sam.prompt_encoder.not_a_point_embed.weight)

    @property
    def sam(self) -> Sam:
        return self._sam[0]

    @property
    def grid(self) -> int:
        return int(self.sam.prompt_encoder.image_embedding_size[0])

    @property
    def stride(self) -> int:
        return int(self.sam.image_encoder.img_size) // self.grid

    @property
    def views(self) -> Optional[dict]:
        """The per-box views this SAM decodes on (`dessam.models.box_views`), or None."""
        return getattr(self.sam, "view_spec", None)

    def extra_tokens(self, use_token: bool) -> torch.Tensor:
        """The tokens added after SAM's output tokens: (1, C) the learned token with `use_token`,
        else (0, C)."""
        if use_token and self.prompt_token is not None:
            return self.prompt_token.weight
        return self.sam.mask_decoder.iou_token.weight[:0]

    def window_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """What a prompt's decoding window must hold: its box, or the square of its view."""
        if self.views is None:
            return boxes
        return view_squares(boxes, float(self.views["context"]), float(self.views["min_side"]))

    def windows(self, boxes: torch.Tensor, margin: Optional[int]) -> tuple:
        """`prompt_windows` for this SAM's grid; margin None = full decoding. A SAM that decodes on
        views gets windows that hold each box's view (and no further margin)."""
        if self.views is not None:
            return prompt_windows(self.window_boxes(boxes), self.stride, self.grid, 0)
        if margin is None:
            return None, self.grid
        return prompt_windows(boxes, self.stride, self.grid, int(margin))

    def forward(
        self,
        embeddings: torch.Tensor,
        boxes: torch.Tensor,
        image_index: Optional[torch.Tensor] = None,
        use_token: bool = True,
        origins: Optional[torch.Tensor] = None,
        size: Optional[int] = None,
        images: Optional[torch.Tensor] = None,
    ) -> DecodedMasks:
        """Low-resolution mask logits and IoU predictions for N boxes.

        embeddings: (B, C, h, w) image embeddings; boxes: (N, 4) x1y1x2y2 in the model's input
        frame; image_index: (N,) which embedding each box belongs to (default: all image 0);
        origins / size: each prompt's window of the embedding grid (`windows`), or None for the
        whole grid; images: the normalised input images (B, 3, S, S), which a SAM that decodes on
        per-box views needs.
        """
        sam = self.sam
        n = boxes.shape[0]
        h, w = embeddings.shape[-2:]
        frame = (UPSCALE * h, UPSCALE * w)
        if origins is None:
            size_h, size_w = h, w
            origins = torch.zeros((n, 2), dtype=torch.long, device=boxes.device)
        else:
            size_h = size_w = int(size)
        if n == 0:
            return DecodedMasks(embeddings.new_zeros((0, 1, UPSCALE * size_h, UPSCALE * size_w)),
                                embeddings.new_zeros((0, 1)), origins, frame)
        index = torch.zeros(n, dtype=torch.long, device=boxes.device) if image_index is None else image_index
        if self.views is not None:
            if images is None:
                raise ValueError("this SAM decodes on per-box views: give the normalised images")
            return self._decode_views(images, boxes, index, use_token, origins, size_h, frame)
        sparse, _ = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
        pe = sam.prompt_encoder.get_dense_pe()
        if size_h == h and size_w == w:
            src = embeddings[:1].expand(n, -1, -1, -1) if image_index is None else embeddings[index]
            pos_src = pe.expand(n, -1, -1, -1)
        else:
            src = _gather_windows(embeddings, index, origins, size_h)
            pos_src = _gather_windows(pe, torch.zeros_like(index), origins, size_h)
        masks, iou = self.decode_tokens(src, pos_src, sparse, self.extra_tokens(use_token))
        return DecodedMasks(masks, iou, origins * UPSCALE, frame)

    def decode_tokens(self, src: torch.Tensor, pos_src: torch.Tensor, sparse: torch.Tensor,
                      extra: torch.Tensor) -> tuple:
        """SAM's `MaskDecoder.predict_masks` (first mask token), with the `extra` tokens (T, C) after
        its output tokens (`extra_tokens`): (logits (N, 1, 4h, 4w), IoU (N, 1)) of embeddings `src`
        (N, C, h, w)."""
        sam = self.sam
        decoder = sam.mask_decoder
        n, _, size_h, size_w = src.shape
        dense = decoder_dense(sam, n, size_h, size_w)
        tokens = [decoder.iou_token.weight, decoder.mask_tokens.weight, extra]
        output_tokens = torch.cat(tokens, dim=0).unsqueeze(0).expand(n, -1, -1)
        tokens = torch.cat((output_tokens, sparse), dim=1)
        src = src + dense
        b, c = src.shape[:2]
        hs, src = decoder.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        first_mask_token = hs[:, 1, :]
        src = src.transpose(1, 2).reshape(b, c, size_h, size_w)
        upscaled = decoder.output_upscaling(src)
        hyper = decoder.output_hypernetworks_mlps[0](first_mask_token)
        b, c, uh, uw = upscaled.shape
        masks = (hyper.unsqueeze(1) @ upscaled.view(b, c, uh * uw)).view(b, 1, uh, uw)
        iou = decoder.iou_prediction_head(iou_token_out)[:, :1]
        return masks, iou

    def decode_views(self, images: torch.Tensor, boxes: torch.Tensor, index: torch.Tensor, use_token: bool) -> tuple:
        """(logits (N, 1, r, r) over each box's view, IoU (N, 1), the views' squares (N, 4)) for boxes
        (N, 4) of the normalised `images[index]` (input frame)."""
        return self.decode_views_with(images, boxes, index, self.extra_tokens(use_token))

    def decode_views_with(self, images: torch.Tensor, boxes: torch.Tensor, index: torch.Tensor,
                          extra: torch.Tensor) -> tuple:
        """`decode_views` with the `extra` tokens (T, C) after SAM's output tokens."""
        sam, spec = self.sam, self.views
        size = int(spec["size"])
        squares = self.window_boxes(boxes)
        views = cut_views(images, index, squares, size)
        learning = any(p.requires_grad for p in sam.view_encoder.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and learning):  # frozen: DES-SAM trains the token only
            src = sam.view_encoder(views)
        grid = src.shape[-1]
        # The box in its view, scaled to the prompt encoder's frame: it normalises coordinates by the
        # input size, and the positional encoding of a grid x grid map spans the same unit square.
        local = boxes_in_views(boxes, squares, size) * (self.grid * self.stride / size)
        sparse, _ = sam.prompt_encoder(points=None, boxes=local, masks=None)
        pos_src = sam.prompt_encoder.pe_layer((grid, grid)).unsqueeze(0).expand(boxes.shape[0], -1, -1, -1)
        logits, iou = self.decode_tokens(src, pos_src, sparse, extra)
        return logits, iou, squares

    def _decode_views(self, images, boxes, index, use_token, origins, size, frame) -> DecodedMasks:
        logits, iou, squares = self.decode_views(images, boxes, index, use_token)
        per_logit = self.stride / UPSCALE
        windows = views_to_windows(logits, squares, origins * UPSCALE, UPSCALE * size, per_logit)
        return DecodedMasks(windows, iou, origins * UPSCALE, frame)


def decoder_dense(sam: Sam, n: int, h: int, w: int) -> torch.Tensor:
    """The dense prompt of a box prompt (SAM's "no mask" embedding) over an h x w grid."""
    return sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(n, -1, h, w)


def _gather_windows(maps: torch.Tensor, index: torch.Tensor, origins: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, size, size): the window at `origins[i]` (row, col) of `maps[index[i]]`."""
    offsets = torch.arange(size, device=maps.device)
    rows = (origins[:, 0:1] + offsets)[:, :, None]                       # (N, size, 1)
    cols = (origins[:, 1:2] + offsets)[:, None, :]                       # (N, 1, size)
    picked = maps[index[:, None, None], :, rows, cols]                   # (N, size, size, C)
    return picked.permute(0, 3, 1, 2)


def decoding_margin(config, sam, local: Optional[bool] = None) -> Optional[int]:
    """Tokens of embedding around each box when decoding locally, None for the whole embedding.

    `local`: whether to decode locally (None: the model's `model.local_decoding`). A SAM trained to
    decode on windows (the U-Net default teacher, `decodes_locally`) has no whole-embedding mode:
    it always decodes locally, in training as at test time."""
    if local is None:
        local = config.model.local_decoding
    if getattr(sam, "decodes_locally", False):
        local = True
    return config.model.local_margin if local else None
