"""ViTDet simple feature pyramid built on SAM's single image embedding.

From the embedding E (stride s of the input) it makes four maps at strides s/4, s/2, s and 2s
(4x and 2x transposed-convolution upsampling, identity, 2x max-pooling), each projected to
`out_channels` by a 1x1 conv + LayerNorm and a 3x3 conv + LayerNorm. With SAM ViT at 1024 px
(s = 16) these are the strides 4, 8, 16, 32 of DESIGN.md.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn


class SimpleFeaturePyramid(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, embedding_stride: int):
        super().__init__()
        c = in_channels
        self.strides = [embedding_stride // 4, embedding_stride // 2, embedding_stride, embedding_stride * 2]
        if self.strides[0] < 1 or embedding_stride % 4:
            raise ValueError(f"embedding stride {embedding_stride} must be a multiple of 4")
        self.scales = nn.ModuleList([
            nn.Sequential(
                nn.ConvTranspose2d(c, c // 2, 2, stride=2), LayerNorm2d(c // 2), nn.GELU(),
                nn.ConvTranspose2d(c // 2, c // 4, 2, stride=2),
            ),
            nn.ConvTranspose2d(c, c // 2, 2, stride=2),
            nn.Identity(),
            nn.MaxPool2d(2, stride=2),
        ])
        level_channels = [c // 4, c // 2, c, c]
        self.projections = nn.ModuleList([
            nn.Sequential(
                nn.Conv2d(ch, out_channels, 1, bias=False), LayerNorm2d(out_channels),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), LayerNorm2d(out_channels),
            )
            for ch in level_channels
        ])
        self.out_channels = out_channels

    def forward(self, embedding: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        return OrderedDict(
            (str(level), project(scale(embedding)))
            for level, (scale, project) in enumerate(zip(self.scales, self.projections))
        )
