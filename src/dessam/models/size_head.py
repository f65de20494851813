"""How large an image's nuclei are, read from SAM's image embedding: `NucleusSizeHead`.

A model with `nucleus` scaling brings every image to one nucleus size before it detects anything
(`dessam.geometry.scale`); for a new image that size has to be estimated, as Cellpose's size
model estimates a cell diameter from its network's style. The head reads the embedding of the image
at its own resolution (a few convolutions, a mean over the image's valid part, a linear layer) and
gives the natural logarithm of the median nucleus side (sqrt(w x h) of the boxes) in input pixels.

It is trained apart from the detector, on crops of the corpus zoomed so that their nuclei range
from a few to about a hundred pixels (`dessam.training.size_head`); `trained` says whether it was
(a model trained from scratch on its own boxes has an untrained head and does not use it).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..geometry.scale import SIZE_RANGE


def fixed_input_side(encoder) -> int:
    """The input side `encoder`'s position table fixes (a ViT's own input size), or 0 for a fully
    convolutional encoder (the default teacher's U-Net), which takes any size."""
    return int(encoder.img_size) if getattr(encoder, "pos_embed", None) is not None else 0


def encoder_input_side(encoder, side: int) -> int:
    """The side a crop of `side` pixels is padded to for `encoder`: the next multiple of 16 for a fully
    convolutional one, the encoder's own input size for a ViT (`fixed_input_side`)."""
    return fixed_input_side(encoder) or -(-int(side) // 16) * 16


class NucleusSizeHead(nn.Module):
    def __init__(self, in_channels: int, width: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GELU(),
        )
        self.out = nn.Linear(width, 1)
        nn.init.constant_(self.out.bias, math.log(math.sqrt(SIZE_RANGE[0] * SIZE_RANGE[1])))  # the range's middle
        self.register_buffer("trained", torch.zeros(()))

    def forward(self, embeddings: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """log nucleus side (input pixels) per image from embeddings (B, C, h, w) and `valid` (B, 2): the
        rows and columns of each embedding that the image covers (the rest is padding)."""
        features = self.body(embeddings)
        height, width = features.shape[-2:]
        scale = torch.tensor([height / embeddings.shape[-2], width / embeddings.shape[-1]], device=features.device)
        cells = torch.clamp(torch.ceil(valid.to(features.device) * scale), min=1).long()
        rows = torch.arange(height, device=features.device)[None, :, None] < cells[:, 0, None, None]
        cols = torch.arange(width, device=features.device)[None, None, :] < cells[:, 1, None, None]
        weight = (rows & cols).to(features.dtype)[:, None]
        pooled = (features * weight).sum((-2, -1)) / weight.sum((-2, -1))
        return self.out(pooled)[:, 0]

    @property
    def is_trained(self) -> bool:
        return bool(self.trained.item() > 0)

