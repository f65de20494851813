"""What the model sees of each training image: the whole image fitted to the input, or windows.

With `fit` scaling (the authors'), an image is resized so that its longest side is S: one view.
With `fixed` scaling, it is resampled by the training factor (1 at native resolution) and, when
larger than S, cut into overlapping S x S windows (as prediction cuts large images); a box cut by a
window edge is kept clipped to the window when at least `MIN_VISIBLE` of it lies inside, else it is
left out of that window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..data.coco import ImageRecord
from ..geometry.inputs import ModelInput, prepare_image, resize_by
from ..geometry.tiling import Window, tile_windows

MIN_VISIBLE = 0.5   # of a box's area, for it to count in a window that cuts it
WINDOW_OVERLAP = 0.25  # of the input size


@dataclass
class TrainingView:
    record: ImageRecord
    factor: Optional[float]       # None: fitted (longest side = S); else the resampling factor
    window: Optional[Window]      # in the resampled image; None: the whole image
    boxes: np.ndarray             # (N, 4) in the model's input frame
    annotations: np.ndarray       # (N,) which of the record's boxes they are
    scale: tuple                  # (y, x) input pixels per original pixel
    offset: tuple = (0, 0)        # (y, x) input pixels: where the window starts in the resampled image

    def inputs(self, image: np.ndarray, size: int) -> ModelInput:
        """The model input of this view, from the record's image."""
        if self.factor is None:
            return prepare_image(image, size)
        working = resize_by(image, self.factor)
        if self.window is not None:
            working = working[self.window.rows, self.window.cols]
        return prepare_image(working, size, fit=False)


def training_views(record: ImageRecord, size: int, factor: Optional[float]) -> list:
    """The views of one record (`factor` None: fitted); views left without a box are dropped."""
    every = np.arange(len(record.boxes))
    if factor is None:
        scale = size / max(record.height, record.width)
        resized = (int(record.height * scale + 0.5), int(record.width * scale + 0.5))
        sx, sy = resized[1] / record.width, resized[0] / record.height
        return [TrainingView(record, None, None, record.boxes * np.float32([sx, sy, sx, sy]), every, (sy, sx))]
    shape = (max(int(record.height * factor + 0.5), 1), max(int(record.width * factor + 0.5), 1))
    sx, sy = shape[1] / record.width, shape[0] / record.height
    boxes = record.boxes * np.float32([sx, sy, sx, sy])
    if max(shape) <= size:
        return [TrainingView(record, factor, None, boxes, every, (sy, sx))]
    views = []
    for window in tile_windows(shape, size, int(size * WINDOW_OVERLAP)):
        kept, index = clip_to_window(boxes, window)
        if len(kept):
            views.append(TrainingView(record, factor, window, kept, index, (sy, sx), (window.y0, window.x0)))
    return views


def clip_to_window(boxes: np.ndarray, window: Window) -> tuple:
    """(boxes clipped to `window` and shifted into it, their indices); those less than
    `MIN_VISIBLE` inside go."""
    lo = np.array([window.x0, window.y0, window.x0, window.y0], dtype=np.float32)
    clipped = np.clip(boxes, [window.x0, window.y0] * 2, [window.x1, window.y1] * 2).astype(np.float32)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (inside > 0) & (inside >= MIN_VISIBLE * np.maximum(area, 1e-6))
    return (clipped[keep] - lo).reshape(-1, 4), np.flatnonzero(keep)
