"""RoIAlign over the feature pyramid, with the pooling scales fixed by the pyramid's strides.

torchvision's `MultiScaleRoIAlign` infers each level's scale from the image shapes of the first
call and caches it: given the unpadded size of a wide image first, every later RoI would pool at
twice the right scale. Here each level's scale is 1 / stride, known when the model is built, so a
box always pools the same features whatever images came before.

Level assignment is MMDetection's (the authors' `SingleRoIExtractor`): a box of side
s = sqrt(w h) goes to level floor(log2(s / finest_scale)), clamped to the pyramid; with strides
4-32 and finest_scale 56 this is the same rule as the FPN paper's. Pooling is torchvision's
`roi_align`, with `aligned=True` (half-pixel offset) as in MMCV's RoIAlign that the authors use.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import roi_align


class StridedRoIAlign(nn.Module):
    def __init__(self, featmap_names: list, strides: list, output_size: int, sampling_ratio: int = 0,
                 aligned: bool = True, finest_scale: float = 56.0):
        super().__init__()
        if len(featmap_names) != len(strides):
            raise ValueError(f"{len(featmap_names)} feature maps but {len(strides)} strides")
        self.featmap_names = list(featmap_names)
        self.scales = [1.0 / float(s) for s in strides]
        self.output_size = (int(output_size), int(output_size))
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        self.finest_scale = float(finest_scale)

    def levels(self, boxes: torch.Tensor) -> torch.Tensor:
        """The pyramid level (0 = finest) each box (K, 4) pools from."""
        side = ((boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)).sqrt()
        level = torch.floor(torch.log2(side / self.finest_scale + 1e-6))
        return level.clamp(min=0, max=len(self.scales) - 1).long()

    def forward(self, features: dict, boxes: list, image_shapes=None) -> torch.Tensor:
        """Pooled features (K, C, s, s) of the boxes of every image, in order.

        `image_shapes` is accepted for torchvision's `RoIHeads` and ignored: the scales never
        depend on the images.
        """
        maps = [features[name] for name in self.featmap_names]
        rois = torch.cat([
            torch.cat([torch.full((len(b), 1), i, dtype=b.dtype, device=b.device), b], dim=1)
            for i, b in enumerate(boxes)
        ]) if boxes else maps[0].new_zeros((0, 5))
        out = maps[0].new_zeros((len(rois), maps[0].shape[1]) + self.output_size)
        if not len(rois):
            return out
        levels = self.levels(rois[:, 1:])
        for level, (feature, scale) in enumerate(zip(maps, self.scales)):
            index = torch.where(levels == level)[0]
            if len(index):
                out[index] = roi_align(feature, rois[index], self.output_size, spatial_scale=scale,
                                       sampling_ratio=self.sampling_ratio, aligned=self.aligned).to(out.dtype)
        return out

    def extra_repr(self) -> str:
        strides = [int(round(1 / s)) for s in self.scales]
        return (f"strides={strides}, output_size={self.output_size}, sampling_ratio={self.sampling_ratio}, "
                f"aligned={self.aligned}, finest_scale={self.finest_scale:g}")

