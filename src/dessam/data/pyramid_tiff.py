"""Write a large image as a tiled, pyramidal TIFF from bands of rows, in bounded memory.

Level 0 arrives as an iterator of bands: ``tile`` rows each (the last one may be shorter), the
full width. Each band is cut into tiles as it arrives. Every further level is a quarter of the
one above (its size rounded up), and levels are added while the level above is larger than one
tile. Images shrink by the mean of each 4 x 4 block; label maps (``labels=True``) by taking every
4th pixel, so the ids stay exact. Level 1 is written row by row to a temporary file next to the
output while level 0 passes (1/16 of the image's size), then read back band by band; the smaller
levels (1/256 of the image and less) are made from it in memory.

Two layouts:

- ``"ome"``: OME-TIFF, the pixel size in the OME-XML (``PhysicalSizeX``/``Y`` in µm) and in the
  resolution tags, the smaller levels in SubIFDs; opens in QuPath, Fiji (Bio-Formats), napari,
  tifffile and tiffslide.
- ``"svs"``: Aperio's layout: level 0 described as ``Aperio Image Library ... |MPP = ...``,
  a thumbnail page, then the smaller levels; what OpenSlide and tiffslide read as an Aperio slide.

Images are JPEG-compressed (YCbCr, quality `quality`), label maps zlib-compressed (lossless).
The file is written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np
import tifffile

from ..atomic import atomic_path

LAYOUTS = ("ome", "svs")
FACTOR = 4  # between pyramid levels
THUMBNAIL_SIDE = 1024  # of the svs thumbnail page, at most


def level_shapes(height: int, width: int, tile: int) -> list[tuple[int, int]]:
    """(height, width) of every level: a quarter of the level above while that exceeds one tile."""
    shapes = [(int(height), int(width))]
    while max(shapes[-1]) > tile:
        h, w = shapes[-1]
        shapes.append((-(-h // FACTOR), -(-w // FACTOR)))
    return shapes


def shrink(block: np.ndarray, factor: int, labels: bool) -> np.ndarray:
    """`block` (rows, cols[, channels]) made `factor` times smaller: every `factor`-th pixel for
    labels, else the mean of each factor x factor block (edge blocks padded by repeating edges)."""
    if labels:
        return block[::factor, ::factor]
    h, w = block.shape[:2]
    pad = ((0, -h % factor), (0, -w % factor)) + ((0, 0),) * (block.ndim - 2)
    padded = np.pad(block, pad, mode="edge")
    shape = (padded.shape[0] // factor, factor, padded.shape[1] // factor, factor) + block.shape[2:]
    return np.rint(padded.reshape(shape).mean(axis=(1, 3), dtype=np.float32)).astype(block.dtype)


def _tiles(array: np.ndarray, tile: int) -> Iterator[np.ndarray]:
    for y in range(0, array.shape[0], tile):
        for x in range(0, array.shape[1], tile):
            yield array[y:y + tile, x:x + tile]


def _aperio_description(width: int, height: int, tile: int, quality: int, pixel_size_um: Optional[float]) -> str:
    description = f"Aperio Image Library dessam\r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) JPEG/RGB Q={quality}"
    if pixel_size_um:
        description += f"|AppMag = {10 / pixel_size_um:.4g}|MPP = {pixel_size_um:.6g}"
    return description


class _Pyramid:
    """Level 0 from the bands, level 1 written row by row to a temporary file as level 0 passes
    and read back from it, the smaller levels made from level 1 in memory."""

    def __init__(self, shapes, channels, dtype, tile, labels, workdir):
        self.shapes, self.channels, self.dtype = shapes, channels, np.dtype(dtype)
        self.tile, self.labels = tile, labels
        self._level1 = tempfile.TemporaryFile(dir=workdir) if len(shapes) > 1 else None

    def shape(self, level: int) -> tuple[int, ...]:
        return self.shapes[level] + ((self.channels,) if self.channels > 1 else ())

    def level0_tiles(self, bands: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        height, width = self.shapes[0]
        y = 0
        for band in bands:
            band = np.asarray(band, dtype=self.dtype)
            rows = min(self.tile, height - y)
            if band.shape != (rows,) + self.shape(0)[1:]:
                raise ValueError(f"band at row {y} has shape {band.shape}; expected {(rows,) + self.shape(0)[1:]}")
            # before the tiles: tifffile stops pulling after the last tile
            if self._level1 is not None:
                self._level1.write(np.ascontiguousarray(shrink(band, FACTOR, self.labels)).tobytes())
            yield from _tiles(band, self.tile)
            y += rows
        if y != height:  # reached only when tifffile wants more tiles than the bands gave
            raise ValueError(f"the bands covered {y} rows of {height}")

    def _level1_bands(self) -> Iterator[np.ndarray]:
        """Level 1 read back `tile` rows at a time."""
        shape = self.shape(1)
        row_bytes = int(np.prod(shape[1:])) * self.dtype.itemsize
        self._level1.seek(0)
        for y in range(0, shape[0], self.tile):
            rows = min(self.tile, shape[0] - y)
            yield np.frombuffer(self._level1.read(rows * row_bytes), self.dtype).reshape((rows,) + shape[1:])

    def level1_tiles(self) -> Iterator[np.ndarray]:
        for band in self._level1_bands():
            yield from _tiles(band, self.tile)

    def level1(self) -> np.ndarray:
        """All of level 1 (only for small images)."""
        return np.concatenate(list(self._level1_bands()))

    def smaller_levels(self) -> list[np.ndarray]:
        """Levels 2, 3, ...: level 2 from the level-1 file, each next one from the one above."""
        levels = []
        for level in range(2, len(self.shapes)):
            out = np.empty(self.shape(level), self.dtype)
            above = self._level1_bands() if level == 2 else (levels[-1][y:y + self.tile]
                                                             for y in range(0, levels[-1].shape[0], self.tile))
            y = 0
            for band in above:
                out[y // FACTOR:(y + len(band) + FACTOR - 1) // FACTOR] = shrink(band, FACTOR, self.labels)
                y += len(band)
            levels.append(out)
        return levels

    def close(self) -> None:
        if self._level1 is not None:
            self._level1.close()


def write_pyramid_tiff(
    path: str | os.PathLike,
    bands: Iterable[np.ndarray],
    width: int,
    height: int,
    *,
    channels: int = 3,
    dtype=np.uint8,
    labels: bool = False,
    tile: int = 512,
    layout: str = "ome",
    pixel_size_um: Optional[float] = None,
    quality: int = 90,
    uuid: Optional[str] = None,
) -> Path:
    """Write the image whose level-0 bands `bands` yields (see the module docstring). `uuid`: the
    OME-XML's UUID (default: a new one each time, as tifffile makes it); the same content given the
    same UUID writes the same bytes."""
    _check_arguments(channels, labels, tile, layout, pixel_size_um)
    path = Path(path)
    shapes = level_shapes(height, width, tile)
    rgb = channels == 3 and not labels
    common = {
        "tile": (tile, tile),
        "photometric": "rgb" if rgb else "minisblack",
        "compression": "jpeg" if rgb else "zlib",
        "compressionargs": {"level": quality} if rgb else None,
    }
    resolution = {}
    if pixel_size_um:
        resolution = {"resolution": (1e4 / pixel_size_um, 1e4 / pixel_size_um), "resolutionunit": "CENTIMETER"}
    raw_bytes = height * width * channels * np.dtype(dtype).itemsize
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=raw_bytes > 2**31, ome=layout == "ome") as tif:
        pyramid = _Pyramid(shapes, channels, dtype, tile, labels, path.parent)
        try:
            first = {"shape": pyramid.shape(0), "dtype": dtype, **common, **resolution}
            level1 = {"shape": pyramid.shape(1), "dtype": dtype, **common} if len(shapes) > 1 else None
            if layout == "ome":
                _write_ome(tif, pyramid, bands, first, level1, common, channels, pixel_size_um, uuid)
            else:
                description = _aperio_description(width, height, tile, quality, pixel_size_um)
                _write_aperio(tif, pyramid, bands, first, level1, common, description, quality)
        finally:
            pyramid.close()
    return path


def _check_arguments(channels: int, labels: bool, tile: int, layout: str, pixel_size_um: Optional[float]) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}")
    if tile % 16 or tile < 16:
        raise ValueError(f"the tile size must be a multiple of 16; got {tile}")
    if labels and (channels != 1 or layout != "ome"):
        raise ValueError("label maps are written with one channel, as OME-TIFF")
    if pixel_size_um is not None and not pixel_size_um > 0:
        raise ValueError(f"the pixel size must be positive; got {pixel_size_um}")


def _write_ome(tif, pyramid: "_Pyramid", bands, first: dict, level1: Optional[dict], common: dict, channels: int,
               pixel_size_um: Optional[float], uuid: Optional[str] = None) -> None:
    """Level 0 with its smaller levels as SubIFDs, the OME-XML metadata in the first page."""
    metadata = {"axes": "YXS" if channels > 1 else "YX"}
    if uuid:
        metadata["UUID"] = f"urn:uuid:{uuid}"
    if pixel_size_um:
        metadata.update(PhysicalSizeX=pixel_size_um, PhysicalSizeXUnit="µm",
                        PhysicalSizeY=pixel_size_um, PhysicalSizeYUnit="µm")
    tif.write(pyramid.level0_tiles(bands), subifds=len(pyramid.shapes) - 1, metadata=metadata, **first)
    if level1:
        tif.write(pyramid.level1_tiles(), subfiletype=1, metadata=None, **level1)
    for level in pyramid.smaller_levels():
        tif.write(_tiles(level, pyramid.tile), shape=level.shape, dtype=first["dtype"], subfiletype=1,
                  metadata=None, **common)


def _write_aperio(tif, pyramid: "_Pyramid", bands, first: dict, level1: Optional[dict], common: dict,
                  description: str, quality: int) -> None:
    """Aperio SVS order: level 0, a thumbnail, then the smaller levels as pages of their own."""
    tif.write(pyramid.level0_tiles(bands), description=description, metadata=None, **first)
    if not level1:
        return
    smaller = pyramid.smaller_levels()
    thumbnail = next((lv for lv in smaller if max(lv.shape[:2]) <= THUMBNAIL_SIDE), None)
    tif.write(pyramid.level1() if thumbnail is None else thumbnail, photometric="rgb",
              compression="jpeg", compressionargs={"level": quality},
              description="Aperio Image Library dessam\r\nthumbnail", metadata=None)
    levels = [(pyramid.level1_tiles(), level1["shape"])] + [(_tiles(lv, pyramid.tile), lv.shape) for lv in smaller]
    for tiles, shape in levels:
        tif.write(tiles, shape=shape, dtype=first["dtype"], metadata=None,
                  description="Aperio Image Library dessam", **common)
