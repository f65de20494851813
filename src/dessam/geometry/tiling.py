"""Fields larger than one model input, by overlapping windows, merged without seams.

The image is cut into `tile` x `tile` windows that overlap by at least `overlap` pixels (the
last row and column of windows sit flush with the image edge). Every window is predicted on
its own and its instances are mapped back to the image. A nucleus near a seam is seen by two
or more windows, possibly cut by a window edge in some of them; the merge keeps one copy:

1. each instance gets a *margin*: its distance to the nearest window edge that lies inside the
   image (edges on the image border do not count, so instances there are not "cut");
2. instances are taken from the largest margin down (whole, central copies first, copies cut
   by a window edge last), and one is dropped when it duplicates an instance already kept from
   another window: they share more than half of the smaller one's pixels.

So each nucleus comes from the window in which it lies farthest from the window border, and a
copy cut at an inner edge survives only when no window saw the nucleus whole. Instances of the
same window never suppress each other (that is the predictor's own business). This works when
`overlap` exceeds the largest nucleus diameter: then every nucleus is whole in some window. A given
box (prompted in one window) belongs to the window the merge would choose: where it lies farthest
from the window's inner edges (`best_windows`).

Instances are mask crops with their origins (`dessam.inference.instances.Instances` holds them),
never full-size masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DessamError


@dataclass(frozen=True)
class Window:
    """Rows y0..y1 and columns x0..x1 of an image, and which of its edges lie inside the image."""

    y0: int
    x0: int
    y1: int
    x1: int
    inner: tuple  # (top, bottom, left, right): True where that edge is not the image border

    @property
    def rows(self) -> slice:
        return slice(self.y0, self.y1)

    @property
    def cols(self) -> slice:
        return slice(self.x0, self.x1)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Window start positions along one axis: step `tile - overlap`, the last flush with the end."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def check_tiling(tile: int, overlap: int) -> None:
    if tile < 1:
        raise DessamError(f"the tile size must be a positive number of pixels; got {tile}")
    if not 0 <= overlap < tile:
        raise DessamError(f"--overlap {overlap}: give 0 to {tile - 1} pixels, less than the model's windows of {tile} px")


def tile_windows(shape: tuple, tile: int, overlap: int) -> list:
    """The windows covering an image of `shape` (H, W), row by row."""
    check_tiling(tile, overlap)
    height, width = shape
    windows = []
    for y in tile_starts(height, tile, overlap):
        for x in tile_starts(width, tile, overlap):
            y1, x1 = min(y + tile, height), min(x + tile, width)
            windows.append(Window(y, x, y1, x1, (y > 0, y1 < height, x > 0, x1 < width)))
    return windows


def whole_window(shape: tuple) -> Window:
    return Window(0, 0, shape[0], shape[1], (False, False, False, False))


def best_windows(boxes: np.ndarray, windows: list) -> np.ndarray:
    """For each box (N, 4, x1y1x2y2), the window in which it lies farthest from the window's inner
    edges (edges on the image border do not count), as the merge of detected nuclei chooses."""
    margins = np.full((len(boxes), len(windows)), -np.inf)
    for index, window in enumerate(windows):
        top, bottom, left, right = window.inner
        gaps = np.stack([
            boxes[:, 1] - window.y0 if top else np.full(len(boxes), np.inf),
            window.y1 - boxes[:, 3] if bottom else np.full(len(boxes), np.inf),
            boxes[:, 0] - window.x0 if left else np.full(len(boxes), np.inf),
            window.x1 - boxes[:, 2] if right else np.full(len(boxes), np.inf),
        ])
        inside = (boxes[:, 0] < window.x1) & (boxes[:, 2] > window.x0) & (boxes[:, 1] < window.y1) & (boxes[:, 3] > window.y0)
        margins[inside, index] = gaps.min(axis=0)[inside]
    return np.argmax(margins, axis=1) if len(windows) else np.zeros(len(boxes), np.int64)


def window_boxes(boxes: np.ndarray, mine: np.ndarray, window: Window) -> np.ndarray:
    """The boxes a window is to be prompted with, clipped to it and in its pixels."""
    shift = np.float32([window.x0, window.y0, window.x0, window.y0])
    limit = np.float32([window.x1, window.y1, window.x1, window.y1])
    return np.clip(boxes[mine], shift, limit) - shift


def _margins(window: Window, crops: list, origins: np.ndarray) -> np.ndarray:
    """Each crop's distance to the nearest window edge inside the image (inf: none)."""
    top, bottom, left, right = window.inner
    height, width = window.y1 - window.y0, window.x1 - window.x0
    margins = []
    for crop, (r0, c0) in zip(crops, origins):
        r1, c1 = r0 + crop.shape[0], c0 + crop.shape[1]
        margins.append(min(r0 if top else np.inf, height - r1 if bottom else np.inf,
                           c0 if left else np.inf, width - c1 if right else np.inf))
    return np.asarray(margins, dtype=np.float64)


def _shared_pixels(a_crop, a_origin, b_crop, b_origin) -> int:
    """Pixels two crops (in the same image) have in common."""
    (ay0, ax0), (by0, bx0) = a_origin, b_origin
    y0, x0 = max(ay0, by0), max(ax0, bx0)
    y1, x1 = min(ay0 + a_crop.shape[0], by0 + b_crop.shape[0]), min(ax0 + a_crop.shape[1], bx0 + b_crop.shape[1])
    if y1 <= y0 or x1 <= x0:
        return 0
    return int((a_crop[y0 - ay0:y1 - ay0, x0 - ax0:x1 - ax0] & b_crop[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0]).sum())


@dataclass
class Piece:
    """One window's instance, placed in the image: a candidate of the merge."""

    margin: float        # distance to the nearest inner window edge
    score: float
    window: int          # which window saw it
    crop: np.ndarray
    origin: tuple        # (row, column) of the crop in the image
    box: np.ndarray      # x1y1x2y2 in the image

    @property
    def bottom(self) -> int:
        return int(self.origin[0]) + self.crop.shape[0]


def window_pieces(window: Window, boxes: np.ndarray, scores: np.ndarray, crops: list, origins: np.ndarray,
                  index: int) -> list:
    """The non-empty instances of one window (boxes, scores, crops and origins in its pixels) as merge
    candidates in the image."""
    margins = _margins(window, crops, origins)
    boxes = boxes + np.array([window.x0, window.y0, window.x0, window.y0], dtype=np.float32)
    origins = origins + [window.y0, window.x0]
    return [Piece(margins[k], float(scores[k]), index, crops[k], tuple(origins[k]), boxes[k])
            for k in range(len(crops)) if crops[k].size and crops[k].any()]


def unique_pieces(pieces: list) -> list:
    """The indices of the pieces the merge keeps, in the order it takes them (largest margin first,
    then score; a piece is dropped when it shares more than half of its own or a kept piece's pixels
    with a kept piece of another window)."""
    order = sorted(range(len(pieces)), key=lambda i: (-pieces[i].margin, -pieces[i].score))
    kept, extents = [], np.zeros((len(pieces), 4), dtype=np.int64)
    areas = [int(piece.crop.sum()) for piece in pieces]
    for index in order:
        piece = pieces[index]
        y0, x0 = piece.origin
        y1, x1 = y0 + piece.crop.shape[0], x0 + piece.crop.shape[1]
        near = np.nonzero((extents[:len(kept), 0] < y1) & (extents[:len(kept), 2] > y0)
                          & (extents[:len(kept), 1] < x1) & (extents[:len(kept), 3] > x0))[0]
        if any(pieces[kept[i]].window != piece.window
               and _shared_pixels(piece.crop, piece.origin, pieces[kept[i]].crop, pieces[kept[i]].origin)
               > 0.5 * min(areas[index], areas[kept[i]]) for i in near):
            continue
        extents[len(kept)] = (y0, x0, y1, x1)
        kept.append(index)
    return kept
