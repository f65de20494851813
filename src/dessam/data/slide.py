"""Whole-slide images read region by region, at any pyramid level, never whole.

`open_slide(path)` gives a `Slide` for:

- TIFF-based slides (Aperio ``.svs``, generic tiled and OME-TIFF ``.tif``/``.tiff``, Leica
  ``.scn``, Ventana ``.bif``, Hamamatsu ``.ndpi``) through tiffslide, which installs with pip;
- other vendor formats (3DHISTECH ``.mrxs``, Hamamatsu ``.vms``/``.vmu``, Zeiss ``.czi``,
  Sakura ``.svslide``) through OpenSlide, an optional extra
  (``pip install 'dessam[slides-openslide]'``); when it is installed it also reads ``.ndpi``;
- plain images (PNG, JPEG, BMP, and TIFFs that are not 8-bit gray or RGB) as one-level slides,
  read whole by `dessam.data.images.read_image` (so its size limit and conversions apply).

Coordinates follow OpenSlide: a region's ``(x, y)`` is in level-0 pixels, its ``(w, h)`` in
pixels of the level read, and level pixel ``(i, j)`` starts at level-0 ``(i, j) * downsample``.
Regions are always ``h x w x 3`` uint8 RGB. Pixels outside the slide are white (255): the
colour of empty glass in bright field, so padding is skipped as glass and never looks like cells.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from pathlib import Path
from typing import Optional

import numpy as np
import tifffile
from PIL import Image

from ..errors import DessamError
from .images import IMAGE_SUFFIXES, MAX_PIXELS, TIFF_SUFFIXES, read_image, to_rgb
from .pixel_size import PixelSize, square_pixel_size, tiff_pixel_size_um

TIFFSLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".scn", ".bif")
OPENSLIDE_SUFFIXES = (".mrxs", ".vms", ".vmu", ".czi", ".svslide")
SLIDE_SUFFIXES = TIFFSLIDE_SUFFIXES + OPENSLIDE_SUFFIXES
OPENSLIDE_HINT = "pip install 'dessam[slides-openslide]' (the openslide-bin and openslide-python wheels)"
PAD_VALUE = 255  # outside the slide: white glass
_BAND_PIXELS = 2**24  # source pixels read at once by `read_scaled`


def _unreadable(path: Path, exc: BaseException) -> DessamError:
    return DessamError(f"{path}: cannot read slide ({type(exc).__name__}: {exc}); "
                       "the file is corrupt, incomplete or not a supported slide format")


def openslide_available() -> bool:
    """True when the optional OpenSlide reader can be imported."""
    if importlib.util.find_spec("openslide") is None:
        return False
    try:
        import openslide  # noqa: F401  (fails when the OpenSlide library itself is missing)
    except Exception:
        return False
    return True


class _TiffSlideReader:
    name = "tiffslide"

    def __init__(self, path: Path):
        self._slide = _tiffslide_at_level()(path)
        self.level_dimensions = tuple((int(w), int(h)) for w, h in self._slide.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in self._slide.level_downsamples)
        self.pixel_size = tiff_pixel_size_um(self._slide.ts_tifffile) or self._vendor_pixel_size()

    def _vendor_pixel_size(self) -> Optional[PixelSize]:
        """tiffslide's own value for vendor formats (Leica, Philips); values it recovered from
        resolution tags are not taken, `tiff_pixel_size_um` has judged those already."""
        props = self._slide.properties
        mpp = props.get("tiffslide.mpp-x"), props.get("tiffslide.mpp-y")
        if None in mpp or "tiff.ResolutionUnit" in props:
            return None
        return float(mpp[0]), float(mpp[1])

    def read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        return np.asarray(self._slide.read_region((x, y), level, (w, h), as_array=True, padding=False))

    def close(self) -> None:
        self._slide.close()


@functools.lru_cache(maxsize=None)
def _tiffslide_at_level():
    """tiffslide's TiffSlide whose `read_region` takes the origin in the level's own pixels, through
    the method tiffslide documents for changing how the location is read (so regions start exactly
    where asked, with no level-0 rounding)."""
    import tiffslide

    class TiffSlideAtLevel(tiffslide.TiffSlide):
        def _read_region_loc_transform(self, location, level):
            return int(location[0]), int(location[1])

    return TiffSlideAtLevel


class _OpenSlideReader:
    name = "openslide"

    def __init__(self, path: Path):
        import openslide

        self._slide = openslide.OpenSlide(str(path))
        self.level_dimensions = tuple((int(w), int(h)) for w, h in self._slide.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in self._slide.level_downsamples)
        props = self._slide.properties
        try:
            self.pixel_size = (float(props[openslide.PROPERTY_NAME_MPP_X]), float(props[openslide.PROPERTY_NAME_MPP_Y]))
        except (KeyError, ValueError):
            self.pixel_size = None

    def read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        ds = self.level_downsamples[level]
        region = self._slide.read_region((round(x * ds), round(y * ds)), level, (w, h))
        white = Image.new("RGBA", region.size, (PAD_VALUE,) * 4)  # no data (alpha 0) reads as glass
        return np.asarray(Image.alpha_composite(white, region).convert("RGB"))

    def close(self) -> None:
        self._slide.close()


class _ArrayReader:
    """A plain image held in memory as a one-level slide."""

    name = "image"

    def __init__(self, path: Path):
        self._image = read_image(path)
        h, w = self._image.shape[:2]
        self.level_dimensions = ((w, h),)
        self.level_downsamples = (1.0,)
        self.pixel_size = None
        if path.suffix.lower() in TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tif:
                self.pixel_size = tiff_pixel_size_um(tif)

    def read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        return self._image[y:y + h, x:x + w]

    def close(self) -> None:
        self._image = None


class Slide:
    """An open slide (use `open_slide`); close it, or use it as a context manager."""

    def __init__(self, path: Path, reader):
        self.path = path
        self._reader = reader
        self.reader = reader.name  # "tiffslide", "openslide" or "image"
        self.level_dimensions: tuple[tuple[int, int], ...] = reader.level_dimensions
        self.level_downsamples: tuple[float, ...] = reader.level_downsamples
        self.pixel_size_xy_um: Optional[PixelSize] = reader.pixel_size
        # one number (geometric mean of x and y), None when the file does not say
        self.pixel_size_um: Optional[float] = square_pixel_size(reader.pixel_size)

    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def __repr__(self) -> str:
        w, h = self.dimensions
        return f"Slide({str(self.path)!r}, {w}x{h}, {self.level_count} levels, {self.pixel_size_um} um/px)"

    def best_level_for_downsample(self, downsample: float) -> int:
        """The smallest level that is still at least as detailed as `downsample` asks."""
        level = 0
        for index, ds in enumerate(self.level_downsamples):
            if ds <= downsample * (1 + 1e-6):
                level = index
        return level

    def _read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Level pixels [x, x + w) x [y, y + h), white where outside the level."""
        lw, lh = self.level_dimensions[level]
        out = np.full((h, w, 3), PAD_VALUE, np.uint8)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, lw), min(y + h, lh)
        if x1 > x0 and y1 > y0:
            try:
                data = self._reader.read(level, x0, y0, x1 - x0, y1 - y0)
            except DessamError:
                raise
            except Exception as exc:
                raise _unreadable(self.path, exc) from exc
            out[y0 - y:y1 - y, x0 - x:x1 - x] = to_rgb(np.asarray(data), self.path)
        return out

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """``h x w x 3`` uint8 RGB of `level`, starting at level-0 `location` (OpenSlide's call)."""
        if not 0 <= level < self.level_count:
            raise ValueError(f"{self.path}: level {level} does not exist (the slide has {self.level_count})")
        w, h = (int(v) for v in size)
        if w < 0 or h < 0:
            raise ValueError(f"region size must not be negative; got {size}")
        ds = self.level_downsamples[level]
        x, y = (math.floor(v / ds) for v in location)
        return self._read_level(level, x, y, w, h)

    def read_scaled(self, location: tuple[float, float], size: tuple[int, int], downsample: float) -> np.ndarray:
        """``h x w x 3`` uint8 RGB where each pixel covers `downsample` level-0 pixels a side.

        The region starts at level-0 `location`. It is read from the best pyramid level and
        resampled (area average when shrinking, bilinear when enlarging), band by band, so memory
        stays small whatever the region's size.
        """
        w, h = (int(v) for v in size)
        if not downsample > 0:
            raise ValueError(f"downsample must be positive; got {downsample}")
        level = self.best_level_for_downsample(downsample)
        ds = self.level_downsamples[level]
        factor = downsample / ds  # level pixels per output pixel
        fx0, fy0 = location[0] / ds, location[1] / ds
        fx1 = fx0 + w * factor
        ix0, ix1 = math.floor(fx0), math.ceil(fx1)
        if abs(factor - 1) < 1e-9 and fx0 == ix0 and fy0 == math.floor(fy0):
            return self._read_level(level, ix0, int(fy0), w, h)
        resample = Image.Resampling.BOX if factor >= 1 else Image.Resampling.BILINEAR
        band = max(1, int(_BAND_PIXELS / max(1.0, (ix1 - ix0) * factor)))  # output rows per band
        out = np.empty((h, w, 3), np.uint8)
        for r0 in range(0, h, band):
            r1 = min(r0 + band, h)
            sy0, sy1 = fy0 + r0 * factor, fy0 + r1 * factor
            iy0, iy1 = math.floor(sy0), math.ceil(sy1)
            source = Image.fromarray(self._read_level(level, ix0, iy0, ix1 - ix0, iy1 - iy0))
            box = (fx0 - ix0, sy0 - iy0, fx1 - ix0, sy1 - iy0)
            out[r0:r1] = np.asarray(source.resize((w, r1 - r0), resample, box=box))
        return out

    def thumbnail_downsample(self, max_side: int) -> float:
        """The downsample at which the whole slide is at most `max_side` pixels a side (>= 1)."""
        return max(1.0, max(self.dimensions) / max(1, int(max_side)))

    def thumbnail(self, max_side: int = 1024) -> np.ndarray:
        """The whole slide, at most `max_side` pixels on its longer side (never enlarged)."""
        downsample = self.thumbnail_downsample(max_side)
        w, h = self.dimensions
        return self.read_scaled((0, 0), (max(1, round(w / downsample)), max(1, round(h / downsample))), downsample)

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def resolve_pixel_size(slide: Slide, override_um: Optional[float] = None) -> tuple[Optional[float], Optional[str]]:
    """(pixel size to use, one line to tell the user or None).

    A given `override_um` (``--pixel-size``) wins, with a note when the file says otherwise; a
    slide whose file has no pixel size and no override gives None: lengths stay in pixels.
    """
    found = slide.pixel_size_um
    if override_um is not None:
        if not override_um > 0:
            raise DessamError(f"--pixel-size {override_um}: the pixel size must be a positive number of microns")
        if found is not None and abs(override_um / found - 1) > 0.05:
            return override_um, (f"{slide.path}: --pixel-size {override_um} um overrides the {found:.4g} um per pixel "
                                 "written in the file")
        return override_um, None
    if found is None:
        return None, (f"{slide.path}: the file does not say its pixel size; measurements are in pixels "
                      "(give --pixel-size UM for microns)")
    return found, None


def _first_page(path: Path) -> Optional[tuple[np.dtype, int, int, int, int]]:
    """(dtype, samples, height, width, levels) of a TIFF's first series, or None if unreadable."""
    try:
        with tifffile.TiffFile(path) as tif:
            page, series = tif.pages[0], tif.series[0]
            return page.dtype, int(page.samplesperpixel), int(page.imagelength), int(page.imagewidth), len(series.levels)
    except Exception:
        return None


def is_slide(path: str | os.PathLike) -> bool:
    """True for files to read region by region: vendor slide formats, and TIFFs that hold a
    pyramid or are too large to read whole (more than `dessam.data.images.MAX_PIXELS`)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SLIDE_SUFFIXES and suffix not in TIFF_SUFFIXES:
        return True
    if suffix not in TIFF_SUFFIXES:
        return False
    info = _first_page(path)
    return info is not None and (info[4] > 1 or info[2] * info[3] > MAX_PIXELS)


def _open_openslide(path: Path) -> Slide:
    try:
        return Slide(path, _OpenSlideReader(path))
    except Exception as exc:
        raise _unreadable(path, exc) from exc


def open_slide(path: str | os.PathLike) -> Slide:
    """Open a slide or a plain image (see the module docstring for which reader reads what)."""
    path = Path(path)
    if not path.is_file():
        raise DessamError(f"{path}: slide file not found; check the path")
    suffix = path.suffix.lower()
    if suffix in OPENSLIDE_SUFFIXES or (suffix == ".ndpi" and openslide_available()):
        if not openslide_available():
            raise DessamError(f"{path}: {suffix} slides are read by OpenSlide, which is not installed; {OPENSLIDE_HINT}")
        return _open_openslide(path)
    if suffix in TIFFSLIDE_SUFFIXES:
        info = _first_page(path)
        if info is None:
            raise DessamError(f"{path}: not a readable TIFF file; the file is corrupt or incomplete")
        dtype, samples, height, width, levels = info
        if dtype == np.uint8 and samples in (1, 3, 4):
            try:
                return Slide(path, _TiffSlideReader(path))
            except Exception as exc:
                if openslide_available():
                    return _open_openslide(path)
                raise _unreadable(path, exc) from exc
        if levels > 1 or height * width > MAX_PIXELS:
            raise DessamError(f"{path}: slide holds {dtype} data with {samples} channel(s); dessam reads 8-bit "
                              "gray or RGB slides: convert it to 8-bit RGB")
        return Slide(path, _ArrayReader(path))
    if suffix in IMAGE_SUFFIXES:
        return Slide(path, _ArrayReader(path))
    raise DessamError(f"{path}: unknown image or slide format {suffix!r}; use one of "
                      f"{', '.join(SLIDE_SUFFIXES + tuple(s for s in IMAGE_SUFFIXES if s not in SLIDE_SUFFIXES))}")
