"""What `predict` returns for one image: a label map, the boxes and the scores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .instances import Instances


@dataclass
class Prediction:
    """Nuclei of one image at its own size.

    labels: (H, W) uint16/uint32 label map, 0 = background; id k is row k - 1 of `boxes` and
    `scores`, which run from the highest score down. A nucleus painted over entirely by others keeps
    its row but has no pixel. instances: the same nuclei as mask crops before painting (they may
    overlap), for COCO results and per-instance work.
    """

    labels: np.ndarray
    boxes: np.ndarray                 # (N, 4) float32 x1y1x2y2 in image pixels
    scores: np.ndarray                # (N,)
    instances: Optional[Instances] = field(default=None, repr=False)
    image: Optional[np.ndarray] = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.scores)

    def mask(self, k: int) -> np.ndarray:
        """Nucleus `k` (0-based row) as a full-size bool mask, as painted in `labels`."""
        return self.labels == k + 1

    def measurements(self, pixel_size_um: Optional[float] = None, image: Optional[np.ndarray] = None) -> list:
        """Per-nucleus morphometry and intensities (scikit-image regionprops), one dict per label."""
        from ..metrics.measurements import nucleus_measurements  # scikit-image: loaded when measured, not to predict

        source = image if image is not None else self.image
        if source is None:
            source = np.zeros(self.labels.shape, dtype=np.uint8)
        return nucleus_measurements(self.labels, source, self.scores, pixel_size_um)

    def to_geojson(self, pixel_size_um: Optional[float] = None) -> dict:
        """QuPath-compatible FeatureCollection: one polygon detection per nucleus."""
        from ..geometry.outlines import labels_to_geojson

        return labels_to_geojson(self.labels, self.measurements(pixel_size_um))

    @classmethod
    def from_instances(cls, instances: Instances, overlap_winner: str, image: Optional[np.ndarray] = None):
        """Paint post-processed `instances` (any order) into a prediction."""
        ordered = instances.by_score()
        return cls(ordered.paint(overlap_winner), ordered.boxes, ordered.scores, ordered, image)
