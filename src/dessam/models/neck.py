"""ViTDet simple feature pyramid built on SAM's single image embedding.

From the embedding E (stride s of the input) it makes four maps at strides s/4, s/2, s and 2s
(4x and 2x transposed-convolution upsampling, identity, 2x max-pooling), each projected to
`out_channels` by a 1x1 conv + LayerNorm and a 3x3 conv + LayerNorm. With SAM ViT at 1024 px
(s = 16) these are the strides 4, 8, 16, 32 of DESIGN.md. An embedding that is already fine (the
default teacher's, s = 4) can start the pyramid at another stride (`model.neck_finest_stride`):
levels coarser than s are max-pooled from it.

`extra_convs` (`model.neck_convs`, default 0: ViTDet's) adds that many 3x3 conv + LayerNorm + GELU
layers to every level after its projection: an embedding trained to draw masks (the default
teacher's) then gets room to become one that tells nuclei from what looks like them.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn


def _rescale(channels: int, factor: float) -> tuple:
    """(module, output channels) taking the embedding to `factor` x its stride: 4x / 2x transposed
    convolutions (halving channels each time, as ViTDet), identity, or max-pooling by `factor`."""
    c = channels
    if factor == 0.25:
        return nn.Sequential(
            nn.ConvTranspose2d(c, c // 2, 2, stride=2), LayerNorm2d(c // 2), nn.GELU(),
            nn.ConvTranspose2d(c // 2, c // 4, 2, stride=2),
        ), c // 4
    if factor == 0.5:
        return nn.ConvTranspose2d(c, c // 2, 2, stride=2), c // 2
    if factor == 1:
        return nn.Identity(), c
    if factor in (2, 4, 8, 16):
        return nn.MaxPool2d(int(factor), stride=int(factor)), c
    raise ValueError(f"a pyramid level at {factor} x the embedding's stride is not supported")


class SimpleFeaturePyramid(nn.Module):
    """Four levels at strides f, 2f, 4f, 8f of the input; f (`finest_stride`) defaults to the
    embedding's stride / 4, ViTDet's choice."""

    def __init__(self, in_channels: int, out_channels: int, embedding_stride: int, finest_stride: int | None = None,
                 extra_convs: int = 0):
        super().__init__()
        finest = embedding_stride // 4 if finest_stride is None else int(finest_stride)
        self.strides = [finest, 2 * finest, 4 * finest, 8 * finest]
        if finest < 1 or (finest_stride is None and embedding_stride % 4):
            raise ValueError(f"embedding stride {embedding_stride} must be a multiple of 4")
        scales, level_channels = zip(*(_rescale(in_channels, stride / embedding_stride) for stride in self.strides))
        self.scales = nn.ModuleList(scales)
        extra = [layer for _ in range(int(extra_convs)) for layer in (
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), LayerNorm2d(out_channels), nn.GELU())]
        self.projections = nn.ModuleList([
            nn.Sequential(
                nn.Conv2d(ch, out_channels, 1, bias=False), LayerNorm2d(out_channels),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), LayerNorm2d(out_channels),
                *[copy.deepcopy(layer) for layer in extra],
            )
            for ch in level_channels
        ])
        self.out_channels = out_channels

    def forward(self, embedding: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        return OrderedDict(
            (str(level), project(scale(embedding)))
            for level, (scale, project) in enumerate(zip(self.scales, self.projections))
        )
