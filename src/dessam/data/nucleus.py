"""One nucleus as it travels through whole-slide code: its id, where it lies, and its mask.

A nucleus is never a slide-sized array: it is a boolean crop plus the level-0 box of that crop,
so memory grows with the nuclei, not with the slide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Nucleus:
    """A nucleus in level-0 pixel coordinates of its slide.

    `box` is ``x1, y1, x2, y2`` (pixel edges, x2 and y2 exclusive) of the crop that `mask`
    covers, so ``mask.shape == (y2 - y1, x2 - x1)``; the id is the nucleus's value in label
    images (1, 2, ...). `measurements` are the numbers written to CSV and GeoJSON.
    """

    id: int
    box: tuple[int, int, int, int]
    mask: np.ndarray
    score: float = 1.0
    measurements: dict = field(default_factory=dict)

    def __post_init__(self):
        self.id = int(self.id)
        self.box = tuple(int(v) for v in self.box)
        self.mask = np.asarray(self.mask, dtype=bool)
        x1, y1, x2, y2 = self.box
        if self.id < 1:
            raise ValueError(f"nucleus ids start at 1; got {self.id}")
        if self.mask.shape != (y2 - y1, x2 - x1):
            raise ValueError(f"nucleus {self.id}: mask shape {self.mask.shape} does not match its box {self.box}")

    @classmethod
    def from_labels(cls, labels: np.ndarray, x0: int = 0, y0: int = 0, first_id: int = 1) -> list["Nucleus"]:
        """The nuclei of a label map whose pixel (0, 0) is at level-0 (x0, y0), numbered from
        `first_id` in ascending order of their label values."""
        from scipy import ndimage

        labels = np.asarray(labels)
        nuclei = []
        for index, crop in enumerate(ndimage.find_objects(labels)):
            if crop is None:
                continue
            rows, cols = crop
            box = (x0 + cols.start, y0 + rows.start, x0 + cols.stop, y0 + rows.stop)
            nuclei.append(cls(first_id + len(nuclei), box, labels[crop] == index + 1))
        return nuclei
