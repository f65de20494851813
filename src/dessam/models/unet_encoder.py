"""A small convolutional image encoder with a fine output grid, for the bundled default teacher.

It stands in for SAM's ViT: image (B, 3, S, S) -> embedding (B, C, S/4, S/4), one token per 4
pixels, so that SAM's decoder (which upsamples its grid 4 x) draws masks at one logit per input
pixel and a nucleus of 15 px is four tokens across. A U-Net-shaped path gives each token a wide
view at that resolution: residual stages at strides 2, 4, 8 and 16 (dilated convolutions in the
last), then top-down fusion back to stride 4 (upsample, add a 1 x 1 projection of the skip, a
residual block), then a neck shaped like SAM's (1 x 1 conv, LayerNorm, 3 x 3 conv, LayerNorm).
GroupNorm (per image) keeps the result independent of the batch. Fully convolutional: any input
size that is a multiple of 16 works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

from .conv_encoder import ResidualBlock, _down, _norm

STRIDE = 4
LEVELS = 4  # stages at strides 2, 4, 8, 16


class TopDown(nn.Module):
    """Upsample the coarser map 2 x, add a projection of the skip, refine with a residual block."""

    def __init__(self, coarse: int, skip: int):
        super().__init__()
        self.lateral = nn.Sequential(nn.Conv2d(skip, coarse, 1, bias=False), _norm(coarse))
        self.refine = ResidualBlock(coarse)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(coarse, size=skip.shape[-2:], mode="nearest")
        return self.refine(up + self.lateral(skip))


class UNetEncoder(nn.Module):
    """Image encoder with SAM's interface: attribute `img_size`, output (B, out_chans, S/4, S/4)."""

    def __init__(self, img_size: int = 512, out_chans: int = 64, widths: tuple = (24, 48, 96, 128),
                 depths: tuple = (1, 2, 2, 3)):
        super().__init__()
        if len(widths) != LEVELS or len(depths) != LEVELS:
            raise ValueError(f"the encoder has {LEVELS} stages: give {LEVELS} widths and depths")
        self.img_size = int(img_size)
        stages = []
        cin = 3
        for index, (width, depth) in enumerate(zip(widths, depths)):
            last = index == LEVELS - 1
            blocks = [_down(cin, width)]
            blocks += [ResidualBlock(width, dilation=(2 ** (i % 3)) if last else 1) for i in range(depth)]
            stages.append(nn.Sequential(*blocks))
            cin = width
        self.stages = nn.ModuleList(stages)
        # coarse -> fine: stride 16 -> 8 (skip: stage 2), 8 -> 4 (skip: stage 1); channels of the coarse map
        self.project = nn.ModuleList([
            nn.Sequential(nn.Conv2d(widths[3], widths[2], 1, bias=False), _norm(widths[2])),
            nn.Sequential(nn.Conv2d(widths[2], widths[1], 1, bias=False), _norm(widths[1])),
        ])
        self.fuse = nn.ModuleList([TopDown(widths[2], widths[2]), TopDown(widths[1], widths[1])])
        self.neck = nn.Sequential(
            nn.Conv2d(widths[1], out_chans, 1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        x = maps[3]
        for project, fuse, skip in zip(self.project, self.fuse, (maps[2], maps[1])):
            x = fuse(project(x), skip)
        return self.neck(x)
