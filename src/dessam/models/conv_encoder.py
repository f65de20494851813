"""A small, fully convolutional image encoder for the bundled default teacher.

It stands in for SAM's ViT: image (B, 3, S, S) -> embedding (B, C, S/8, S/8). Residual stages
at strides 2, 4 and 8, dilated convolutions and a pooled global-context term in the last stage to
widen the view, then a neck shaped like SAM's (1x1 conv, LayerNorm, 3x3 conv, LayerNorm). GroupNorm
(per image) rather than BatchNorm keeps the result independent of the batch and of the dataset
statistics it was trained on.
"""

from __future__ import annotations

import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

STRIDE = 8


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels // 4), channels)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, dilation: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False),
            _norm(channels),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            _norm(channels),
        )
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class GlobalContext(nn.Module):
    """Adds a projection of the image-wide mean feature to every position."""

    def __init__(self, channels: int):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(channels, channels), nn.GELU(), nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(x.mean(dim=(2, 3)))[:, :, None, None]


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), _norm(cout), nn.GELU())


class ConvEncoder(nn.Module):
    """Image encoder with SAM's interface: attribute `img_size`, output (B, out_chans, S/8, S/8)."""

    def __init__(
        self,
        img_size: int = 256,
        out_chans: int = 96,
        widths: tuple = (32, 64, 128),
        depths: tuple = (1, 2, 4),
    ):
        super().__init__()
        self.img_size = int(img_size)
        stages = []
        cin = 3
        for index, (width, depth) in enumerate(zip(widths, depths)):
            last = index == len(widths) - 1
            blocks = [_down(cin, width)]
            blocks += [ResidualBlock(width, dilation=(2 ** (i % 3)) if last else 1) for i in range(depth)]
            if last:
                blocks.append(GlobalContext(width))
            stages.append(nn.Sequential(*blocks))
            cin = width
        self.stages = nn.Sequential(*stages)
        self.neck = nn.Sequential(
            nn.Conv2d(cin, out_chans, 1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.stages(x))
