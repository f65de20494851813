"""An annotated object read from another tool: a box, or polygons that also give its mask.

Coordinates are pixel edges of the image (level 0 for slides): pixel (row r, column c) covers
x in [c, c + 1] and y in [r, r + 1], as in QuPath, Fiji and `dessam.outputs`. A pixel belongs to
a polygon when its centre lies inside, so outlines traced along pixel edges come back exactly
(when resampled, a centre on an edge counts for the left and top edges only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from skimage.draw import polygon as fill_polygon

Polygon = list[np.ndarray]  # shell, then holes: (n, 2) arrays of x, y
_TIE = 1e-6


@dataclass
class Shape:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    polygons: Optional[list[Polygon]] = None  # None: a box without a mask
    where: str = ""  # file and feature or line, for notes
    measurements: Optional[dict] = None  # numbers the file gives for the object (QuPath's measurements)

    @classmethod
    def from_polygons(cls, polygons: list[Polygon], where: str = "") -> "Shape":
        shells = np.concatenate([p[0] for p in polygons])
        x1, y1 = shells.min(axis=0)
        x2, y2 = shells.max(axis=0)
        return cls((float(x1), float(y1), float(x2), float(y2)), polygons, where)

    def mask(self, height: int, width: int, origin: tuple[float, float] = (0.0, 0.0), scale: float = 1.0) -> np.ndarray:
        """bool (height, width) of the pixels inside, in a frame whose pixel (0, 0) starts at
        `origin` and whose pixels are `scale` source pixels a side."""
        out = np.zeros((height, width), bool)
        for rings in self.polygons or ():
            piece = np.zeros_like(out)
            for k, ring in enumerate(rings):
                # frame coordinates of pixel centres are integers: shift the edges by half a pixel,
                # and a hair more so that a centre exactly on an edge is inside a left or top edge
                # and outside a right or bottom one (no area is gained when resampling)
                cols = (ring[:, 0] - origin[0]) / scale - 0.5 - _TIE
                rows = (ring[:, 1] - origin[1]) / scale - 0.5 - _TIE
                rr, cc = fill_polygon(rows, cols, out.shape)
                piece[rr, cc] = k == 0  # the shell fills, holes clear
            out |= piece
        return out
