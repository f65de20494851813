"""Training tiles cut out of an annotated slide, so that nobody has to export tiles by hand.

Every tile is a `tile` x `tile` PNG (training resizes images by their longest side, so equal
tiles keep one nucleus scale), named ``SLIDE_x{X}_y{Y}.png`` after its level-0 top-left corner,
and resampled so that a tile pixel is `pixel_size_um` (default: the slide's level-0 pixel).
Where the tiles go:

- with regions (QuPath ``Region*`` annotations): tiles cover each region's bounding box from
  its top-left corner; what lies outside the region is painted white (glass), so nuclei that
  nobody annotated never show in a tile; annotations outside every region are left out;
- without regions: annotations less than half a tile apart form a cluster, and tiles centred
  on each cluster cover its extent (moved inside the slide where the slide is large enough).

An annotation partly outside a tile is clipped to it (and counted), one in two tiles is in both.
Masks are drawn from the polygons at the tile's scale (a pixel is inside when its centre is).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
from scipy import ndimage

from ..errors import DessamError
from .images import write_png
from .shapes import Shape
from .slide import PAD_VALUE, open_slide

Box = tuple[float, float, float, float]  # x1, y1, x2, y2


@dataclass
class TileAnnotation:
    box: Optional[list[float]]  # COCO x, y, w, h in tile pixels, for boxes without a mask
    mask: Optional[np.ndarray]  # bool (tile, tile), for shapes with polygons


@dataclass
class Tile:
    file_name: str  # in the tiles folder
    size: int
    annotations: list[TileAnnotation]


def _scale(slide, pixel_size_um: Optional[float], path: Path) -> float:
    """Level-0 pixels per tile pixel."""
    if pixel_size_um is None:
        return 1.0
    if not pixel_size_um > 0:
        raise DessamError(f"--pixel-size {pixel_size_um}: the tile pixel size must be a positive number of microns")
    if slide.pixel_size_um is None:
        raise DessamError(f"{path}: the slide's file does not say its pixel size, so tiles cannot be resampled to "
                          f"{pixel_size_um} um per pixel; leave out --pixel-size to cut tiles at level 0")
    scale = pixel_size_um / slide.pixel_size_um
    return 1.0 if abs(scale - 1) < 0.01 else scale


def check_slide(slide_path: Path, pixel_size_um: Optional[float] = None) -> None:
    """Raise the error `cut_training_tiles` would meet on opening this slide, before any tile is written."""
    with open_slide(slide_path) as slide:
        _scale(slide, pixel_size_um, slide_path)


def _cover(extent: Box, side: float, dimensions: tuple[int, int], centred: bool) -> list[tuple[int, int]]:
    """Origins of tiles of `side` level-0 pixels covering `extent`."""
    origins = []
    for axis, length in enumerate(dimensions):
        lo, hi = extent[axis], extent[axis + 2]
        count = max(1, math.ceil((hi - lo) / side - 1e-9))
        start = (lo + hi - count * side) / 2 if centred else lo
        if centred:
            start = (length - count * side) / 2 if length < count * side else min(max(start, 0), length - count * side)
        origins.append([round(start + k * side) for k in range(count)])
    return [(x, y) for y in origins[1] for x in origins[0]]


def _clusters(boxes: np.ndarray, side: float) -> list[Box]:
    """Extents of the groups of boxes less than about half a tile apart."""
    cell = side / 4
    cells = np.floor(boxes / cell).astype(np.int64)
    cells -= np.array([cells[:, 0].min(), cells[:, 1].min()] * 2)
    grid = np.zeros((cells[:, 3].max() + 1, cells[:, 2].max() + 1), bool)
    for cx0, cy0, cx1, cy1 in cells:
        grid[cy0:cy1 + 1, cx0:cx1 + 1] = True
    groups, count = ndimage.label(ndimage.binary_dilation(grid, np.ones((3, 3))), np.ones((3, 3)))
    member = groups[cells[:, 1], cells[:, 0]] - 1
    extents = []
    for k in range(count):
        part = boxes[member == k]
        if len(part):
            extents.append((part[:, 0].min(), part[:, 1].min(), part[:, 2].max(), part[:, 3].max()))
    return extents


def _placements(shapes: list[Shape], regions: list[Shape], side: float, dimensions) -> list[tuple[int, int, Optional[Box]]]:
    """(x, y, region box or None) of every tile, without repeats."""
    if regions:
        places = [(x, y, r.box) for r in regions for x, y in _cover(r.box, side, dimensions, centred=False)]
    elif shapes:
        extents = _clusters(np.array([s.box for s in shapes], np.float64), side)
        places = [(x, y, None) for e in extents for x, y in _cover(e, side, dimensions, centred=True)]
    else:
        places = []
    seen, unique = set(), []
    for place in places:
        if place not in seen:
            seen.add(place)
            unique.append(place)
    return unique


def _in_regions(shape: Shape, regions: list[Shape]) -> bool:
    cx, cy = (shape.box[0] + shape.box[2]) / 2, (shape.box[1] + shape.box[3]) / 2
    return any(r.box[0] <= cx < r.box[2] and r.box[1] <= cy < r.box[3] for r in regions)


def cut_training_tiles(
    slide_path: Path,
    shapes: list[Shape],
    regions: list[Shape],
    tiles_dir: Path,
    tile: int = 512,
    pixel_size_um: Optional[float] = None,
    notes: Optional[list[str]] = None,
) -> Iterator[Tile]:
    """Write the tiles of one slide (see the module docstring) and yield them with their annotations."""
    notes = [] if notes is None else notes
    with open_slide(slide_path) as slide:
        scale = _scale(slide, pixel_size_um, slide_path)
        side = tile * scale
        if regions:
            kept = [s for s in shapes if _in_regions(s, regions)]
            if len(kept) < len(shapes):
                notes.append(f"{slide_path.name}: {len(shapes) - len(kept)} annotations outside every Region* "
                             "annotation left out")
            shapes = kept
        boxes = np.array([s.box for s in shapes], np.float64).reshape(-1, 4)
        places = _placements(shapes, regions, side, slide.dimensions)
        clipped = 0
        for x, y, region in places:
            # the visible window in level-0 pixels: the tile, within the region if there is one
            vx0, vy0, vx1, vy1 = x, y, x + side, y + side
            if region is not None:
                vx0, vy0, vx1, vy1 = max(vx0, region[0]), max(vy0, region[1]), min(vx1, region[2]), min(vy1, region[3])
            image = slide.read_scaled((x, y), (tile, tile), scale)
            # window in tile pixels (a pixel is visible when its centre is)
            c0, r0 = round((vx0 - x) / scale), round((vy0 - y) / scale)
            c1, r1 = round((vx1 - x) / scale), round((vy1 - y) / scale)
            visible = np.zeros((tile, tile), bool)
            visible[r0:r1, c0:c1] = True
            image[~visible] = PAD_VALUE
            annotations = []
            touching = np.flatnonzero((boxes[:, 0] < vx1) & (boxes[:, 2] > vx0) & (boxes[:, 1] < vy1) & (boxes[:, 3] > vy0))
            for k in touching:
                shape = shapes[k]
                bx0, by0, bx1, by1 = shape.box
                cut = bx0 < vx0 or by0 < vy0 or bx1 > vx1 or by1 > vy1
                if shape.polygons is not None:
                    mask = shape.mask(tile, tile, origin=(x, y), scale=scale) & visible
                    if not mask.any():
                        continue
                    annotations.append(TileAnnotation(None, mask))
                else:
                    left, top = (max(bx0, vx0) - x) / scale, (max(by0, vy0) - y) / scale
                    right, bottom = (min(bx1, vx1) - x) / scale, (min(by1, vy1) - y) / scale
                    if right <= left or bottom <= top:
                        continue
                    annotations.append(TileAnnotation([left, top, right - left, bottom - top], None))
                clipped += cut
            file_name = f"{slide_path.stem}_x{x}_y{y}.png"
            write_png(tiles_dir / file_name, image)
            yield Tile(file_name, tile, annotations)
        notes.append(f"{slide_path.name}: {len(places)} tiles of {tile} x {tile} px at "
                     f"{'level 0' if scale == 1 else f'{pixel_size_um} um per pixel'}"
                     + (f"; {clipped} annotations cut by a tile edge were clipped" if clipped else ""))
