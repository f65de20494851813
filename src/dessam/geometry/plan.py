"""How one image, or one region of a whole slide, is brought to the model: `WindowPlan`.

An image is resampled by `factor` to the model's scale (`dessam.geometry.scale`), then either fitted
whole to the input (the `fit` scaling's own resize, done by `prepare_image`), or cut into overlapping
windows of the input size (`dessam.geometry.tiling`). The plan says which, holds the windows, and
maps boxes there and results back. `predict`, `eval`, `label` and whole slides all walk their
windows with it, batch by batch:

    plan = WindowPlan.for_image(image.shape, size, scale, pixel_size_um, tile, overlap)
    working = plan.working(image)
    for batch in plan.batches(batch_size):
        images = [working[plan.windows[i].rows, plan.windows[i].cols] for i in batch]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np

from .inputs import resize_by
from .scale import ModelScale
from .tiling import best_windows, tile_windows, whole_window


@dataclass(frozen=True)
class WindowPlan:
    source_hw: tuple          # (H, W) of the image (or region) as given
    shape: tuple              # (H, W) at the model's scale: the working image the windows cover
    windows: tuple            # `Window`s of the working image
    factor: float = 1.0       # working pixels per source pixel
    tiled: bool = False       # cut into windows whose nuclei are merged (else one window)
    fitted: bool = False      # the whole image goes to the model as it is, fitted by its own resize
    offset: tuple = (0, 0)    # (x, y) of the working image's origin in the source (a slide's region)

    @classmethod
    def for_image(cls, shape: tuple, size: int, scale: ModelScale, pixel_size_um: Optional[float] = None,
                  tile: Optional[bool] = None, overlap: int = 64, nucleus_size: Optional[float] = None) -> "WindowPlan":
        """The plan of an image of `shape` for a model of input `size` and `scale`: windows when it is
        larger than one input at that scale (`tile` None), or as `tile` says. `nucleus_size`: the
        image's typical nucleus in pixels, given or estimated (`nucleus` scaling)."""
        source = tuple(int(v) for v in shape[:2])
        tiled = scale.needs_windows(source, size, pixel_size_um, nucleus_size) if tile is None else bool(tile)
        factor = scale.factor(pixel_size_um, nucleus_size)
        if not tiled and scale.mode == "fit":
            return cls(source, source, (whole_window(source),), 1.0, fitted=True)
        working = source if factor == 1.0 else tuple(max(int(side * factor + 0.5), 1) for side in source)
        windows = tile_windows(working, size, overlap) if tiled else [whole_window(working)]
        return cls(source, working, tuple(windows), factor, tiled)

    @classmethod
    def for_region(cls, region: tuple, factor: float, size: int, overlap: int) -> "WindowPlan":
        """The plan of a region (x, y, w, h) of a slide's full-resolution pixels, read at `factor`
        model pixels per slide pixel, in windows of `size`."""
        shape = (max(1, int(math.floor(region[3] * factor))), max(1, int(math.floor(region[2] * factor))))
        return cls((region[3], region[2]), shape, tuple(tile_windows(shape, size, overlap)), factor,
                   tiled=True, offset=(region[0], region[1]))

    @property
    def downsample(self) -> float:
        """Source pixels per working pixel."""
        return 1.0 / self.factor

    def working(self, image: np.ndarray) -> np.ndarray:
        """The image at the model's scale (the image itself when fitted or not resampled)."""
        return resize_by(image, self.factor) if self.factor != 1.0 else image

    def to_working(self, boxes) -> np.ndarray:
        """Boxes (N, 4, x1y1x2y2) in source pixels, in the working image's pixels."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        return boxes * np.float32([self.shape[1] / self.source_hw[1], self.shape[0] / self.source_hw[0]] * 2)

    def to_source(self, boxes) -> np.ndarray:
        """Boxes (N, 4, x1y1x2y2) in the working image's pixels, in source pixels."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        return boxes * np.float32([self.source_hw[1] / self.shape[1], self.source_hw[0] / self.shape[0]] * 2)

    def owners(self, working_boxes: np.ndarray) -> np.ndarray:
        """The window each box (working pixels) is prompted in: where it lies farthest from the inner edges."""
        return best_windows(working_boxes, list(self.windows))

    def rows(self) -> list:
        """The window indices of each row of windows, top to bottom."""
        starts = sorted({window.y0 for window in self.windows})
        return [[i for i, window in enumerate(self.windows) if window.y0 == y] for y in starts]

    def batches(self, batch_size: int, indices: Optional[Sequence[int]] = None) -> Iterator[list]:
        """`indices` (default: every window) in consecutive batches of at most `batch_size`."""
        indices = list(range(len(self.windows))) if indices is None else list(indices)
        for start in range(0, len(indices), batch_size):
            yield indices[start:start + batch_size]

    def source_rect(self, index: int) -> tuple:
        """(x, y, w, h) of window `index` in source pixels."""
        window, d = self.windows[index], self.downsample
        return (self.offset[0] + window.x0 * d, self.offset[1] + window.y0 * d, (window.x1 - window.x0) * d,
                (window.y1 - window.y0) * d)
