"""Proposal-to-box matching as MMDetection's `MaxIoUAssigner` does it (the authors' detector).

torchvision's `Matcher` assigns by IoU thresholds; its optional low-quality step gives each
annotated box its best-overlapping proposals whatever their IoU. MMDetection's assigner does the
same only where that best IoU reaches `min_pos_iou` (RPN: 0.3, RoI head: 0.5 in the official
configs), and assigns those proposals to *that* box (torchvision re-uses each proposal's own best
box). `min_pos_iou=None` turns the low-quality step off.
"""

from __future__ import annotations

from typing import Optional

import torch
from torchvision.models.detection._utils import Matcher


class MaxIoUMatcher(Matcher):
    def __init__(self, fg_iou: float, bg_iou: float, min_pos_iou: Optional[float]):
        super().__init__(fg_iou, bg_iou, allow_low_quality_matches=min_pos_iou is not None)
        self.min_pos_iou = min_pos_iou

    def set_low_quality_matches_(self, matches: torch.Tensor, all_matches: torch.Tensor,
                                 match_quality_matrix: torch.Tensor) -> None:
        """Each box whose best IoU reaches `min_pos_iou` takes every proposal with that IoU
        (boxes later in the list win ties, as in MMDetection's loop over boxes)."""
        best, _ = match_quality_matrix.max(dim=1)
        chosen = (match_quality_matrix == best[:, None]) & (best[:, None] >= self.min_pos_iou)  # (boxes, proposals)
        taken = chosen.any(dim=0)
        last_box = len(best) - 1 - chosen.flip(0).to(torch.uint8).argmax(dim=0)
        matches[taken] = last_box[taken]
