"""Skip the glass: where a slide holds cells, which tiles to read, and a region of interest.

`tissue_mask` works on a thumbnail of about `resolution_um` µm per pixel (10 by default):

1. the glass colour is the 99th percentile of each channel (on a slide that has any glass, the
   brightest 1 % of it is glass);
2. each pixel's optical density is the largest over the channels of ``log10(glass / pixel)``;
3. the threshold is Otsu's on those densities, held between a floor `min_od` (on a slide with
   few cells Otsu would cut through the glass's own noise) and a ceiling `max_od` (where dense
   cells dominate Otsu would drop faint cytoplasm);
4. pieces smaller than `min_area_um2` are removed (dust, specks);
5. the rest is dilated by `margin_um`, so that cells at a group's edge keep their context.

Lengths are in µm; for a slide whose file has no pixel size, `FALLBACK_PIXEL_SIZE_UM` is used
for these lengths only (it is never reported as the slide's pixel size).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.morphology import disk
from skimage.segmentation import find_boundaries

from ..errors import DessamError
from .images import write_png
from .slide import Slide

FALLBACK_PIXEL_SIZE_UM = 0.25
MAX_THUMBNAIL_SIDE = 4096
MIN_OD = 0.02  # the lowest optical density that counts as cells (`dessam predict --tissue-threshold`)

Rect = tuple[int, int, int, int]  # x, y, width, height in level-0 pixels


@dataclass
class TissueMask:
    """`mask[i, j]` says whether level-0 pixels [j, j + 1) x [i, i + 1) times `downsample` hold cells."""

    mask: np.ndarray  # bool, the thumbnail's size
    downsample: float  # level-0 pixels per mask pixel
    threshold: float  # optical density used
    thumbnail: np.ndarray  # RGB uint8 the mask was made from

    @property
    def fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0


def optical_density(image: np.ndarray) -> np.ndarray:
    """Per pixel of a uint8 RGB image, the largest ``log10(glass / value)`` over the channels
    (glass: each channel's 99th percentile)."""
    counts = [np.cumsum(np.bincount(image[..., c].ravel(), minlength=256)) for c in range(image.shape[-1])]
    glass = np.array([max(int(np.searchsorted(cum, 0.99 * cum[-1])), 1) for cum in counts], np.float32)
    od = np.log10(glass / np.maximum(image.astype(np.float32), 1.0)).max(axis=-1)
    return np.clip(od, 0.0, None)


def _without_small_pieces(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    """`mask` without its 8-connected pieces of fewer than `min_pixels` pixels."""
    pieces, count = ndimage.label(mask, structure=np.ones((3, 3)))
    sizes = np.bincount(pieces.ravel(), minlength=count + 1)
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[pieces]


def tissue_mask(
    slide: Slide,
    resolution_um: float = 10.0,
    min_od: float = MIN_OD,
    max_od: float = 0.15,
    min_area_um2: float = 200.0,
    margin_um: float = 50.0,
    pixel_size_um: Optional[float] = None,
) -> TissueMask:
    """The cell mask of `slide` (see the module docstring); `pixel_size_um` overrides the file's."""
    pixel = pixel_size_um or slide.pixel_size_um or FALLBACK_PIXEL_SIZE_UM
    downsample = max(resolution_um / pixel, max(slide.dimensions) / MAX_THUMBNAIL_SIDE, 1.0)
    width, height = slide.dimensions
    # whole thumbnail pixels only: a pixel half outside the slide would be half white padding
    size = (max(1, int(width / downsample)), max(1, int(height / downsample)))
    thumbnail = slide.read_scaled((0, 0), size, downsample)
    od = optical_density(thumbnail)
    threshold = threshold_otsu(od) if float(od.max() - od.min()) > 1e-6 else min_od
    threshold = float(np.clip(threshold, min_od, max_od))
    um_per_px = pixel * downsample
    mask = _without_small_pieces(od > threshold, min_area_um2 / um_per_px**2)
    radius = round(margin_um / um_per_px)
    if radius > 0:
        mask = ndimage.binary_dilation(mask, structure=disk(radius))
    return TissueMask(mask, downsample, threshold, thumbnail)


def select_tiles(tissue: TissueMask, tiles: Sequence[Rect]) -> np.ndarray:
    """bool per tile (``x, y, w, h`` in level-0 pixels): True where the tile touches the mask."""
    counts = np.pad(tissue.mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    rows, cols = tissue.mask.shape
    keep = np.zeros(len(tiles), bool)
    d = tissue.downsample
    for k, (x, y, w, h) in enumerate(tiles):
        c0, c1 = min(max(math.floor(x / d), 0), cols), min(max(math.ceil((x + w) / d), 0), cols)
        r0, r1 = min(max(math.floor(y / d), 0), rows), min(max(math.ceil((y + h) / d), 0), rows)
        keep[k] = counts[r1, c1] - counts[r0, c1] - counts[r1, c0] + counts[r0, c0] > 0
    return keep


def _starts(start: int, length: int, tile: int, step: int) -> list[int]:
    """Tile starts from `start` every `step`, the last flush with ``start + length``."""
    if length <= tile:
        return [start]
    starts = list(range(start, start + length - tile, step))
    return starts + [start + length - tile]


def tile_grid(width: int, height: int, tile: int, overlap: int = 0, roi: Optional[Rect] = None) -> list[Rect]:
    """Tiles ``x, y, w, h`` covering `roi` (default: the whole slide) row by row, overlapping by
    `overlap`; the last row and column sit flush with the region's edge."""
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile; got tile {tile}, overlap {overlap}")
    x0, y0, w, h = roi if roi is not None else (0, 0, width, height)
    return [(x, y, min(tile, w), min(tile, h))
            for y in _starts(y0, h, tile, tile - overlap) for x in _starts(x0, w, tile, tile - overlap)]


def parse_roi_text(text: str) -> Rect:
    """``"x,y,w,h"`` (level-0 pixels) -> a rectangle with x, y >= 0 and a positive size."""
    parts = str(text).replace(" ", "").split(",")
    try:
        x, y, w, h = (int(v) for v in parts)
    except ValueError:
        raise DessamError(f"--roi {text}: expected four integers x,y,w,h in level-0 pixels, "
                          "e.g. --roi 1000,2000,4096,4096") from None
    if w < 1 or h < 1 or x < 0 or y < 0:
        raise DessamError(f"--roi {text}: the region must start at x, y >= 0 and have a positive width and height; "
                          "fix the numbers")
    return x, y, w, h


def parse_roi(text: str, dimensions: tuple[int, int], where: str = "the slide") -> Rect:
    """``"x,y,w,h"`` (level-0 pixels) -> a rectangle checked to lie inside a slide of `dimensions`."""
    x, y, w, h = parse_roi_text(text)
    width, height = dimensions
    if x + w > width or y + h > height:
        raise DessamError(f"--roi {text}: the region must have a positive size and lie inside {where} "
                          f"({width} x {height} px); fix the numbers")
    return x, y, w, h


def write_mask_png(path: str | os.PathLike, tissue: TissueMask, tiles: Sequence[Rect] = ()) -> None:
    """The thumbnail with the mask tinted green and outlined, and `tiles` outlined in blue."""
    image = tissue.thumbnail.astype(np.float32)
    image[tissue.mask] = 0.65 * image[tissue.mask] + 0.35 * np.array([0, 200, 0])
    image = image.astype(np.uint8)
    image[find_boundaries(tissue.mask, mode="inner")] = (0, 160, 0)
    rows, cols = tissue.mask.shape
    for x, y, w, h in tiles:
        c0, c1 = int(x / tissue.downsample), min(int((x + w) / tissue.downsample), cols - 1)
        r0, r1 = int(y / tissue.downsample), min(int((y + h) / tissue.downsample), rows - 1)
        image[r0:r1 + 1, [c0, c1]] = (30, 60, 230)
        image[[r0, r1], c0:c1 + 1] = (30, 60, 230)
    write_png(path, image)
