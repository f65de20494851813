"""Read microscopy images into numpy arrays and write PNGs.

`read_image` always returns uint8 RGB (H, W, 3), which is what SAM expects. Rules:

- TIFF (``.tif``/``.tiff``) is read with tifffile, everything else with Pillow. Only the first
  page of a multi-page TIFF is used (for pyramidal files that is the full-resolution level).
- Grayscale is repeated to three channels; an alpha channel is dropped; palette images are
  expanded to their colours. Pixels are used as stored (JPEG EXIF orientation is not applied,
  because annotations refer to the stored pixel grid).
- Bit depth: integer data whose maximum is at most 255 is used as is (an 8-bit image stored
  in a 16-bit container stays unchanged). Otherwise the image is divided by its own maximum and
  multiplied by 255. Float data with maximum <= 1 is taken as 0..1 and multiplied by 255.
  Negative and non-finite values become 0.
- The pixel count is checked from the header before any decoding: more than `max_pixels`
  is refused, so a corrupt or hostile header cannot exhaust memory. For non-TIFF files Pillow's
  own decompression-bomb limit (about 179 megapixels) also applies; store larger images as TIFF.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from ..atomic import atomic_path
from ..errors import DessamError

MAX_PIXELS = 2**28  # about 268 megapixels, e.g. 16384 x 16384
TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in TIFF_SUFFIXES


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise DessamError(f"{path}: image file not found; check the path and the --images folder")


def _unreadable(path: Path, exc: BaseException) -> DessamError:
    return DessamError(
        f"{path}: cannot read image ({type(exc).__name__}: {exc}); "
        "the file is corrupt, truncated or not an image: re-export it as PNG or TIFF"
    )


def _check_pixels(path: Path, height: int, width: int, max_pixels: int) -> None:
    if height * width > max_pixels:
        raise DessamError(
            f"{path}: image is too large: its header claims {width} x {height} pixels, more than "
            f"the limit of {max_pixels}; tile the image into smaller files or raise max_pixels if it is genuine"
        )


def _tiff_page_hw(page) -> tuple[int, int]:
    """Height and width of a tifffile page from its axes labels (header only)."""
    axes = page.axes
    return int(page.shape[axes.index("Y")]), int(page.shape[axes.index("X")])


def _open_pillow(path: Path) -> Image.Image:
    """Open with Pillow (header only). Pillow's own decompression-bomb limit is reported as ours."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise DessamError(
            f"{path}: image is too large to decode safely ({exc}); tile it into smaller files"
        ) from exc
    except Exception as exc:  # Pillow raises many types for bad files
        raise _unreadable(path, exc) from exc


def image_shape(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of the image, from the file header only."""
    path = Path(path)
    _check_exists(path)
    if _is_tiff(path):
        try:
            with tifffile.TiffFile(path) as tif:
                return _tiff_page_hw(tif.pages[0])
        except Exception as exc:
            raise _unreadable(path, exc) from exc
    with _open_pillow(path) as img:
        return int(img.height), int(img.width)


def _read_tiff_first_page(path: Path, max_pixels: int) -> np.ndarray:
    """First page as stored, channels last (samples axis moved to the end)."""
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            height, width = _tiff_page_hw(page)
            _check_pixels(path, height, width, max_pixels)
            data = page.asarray()
            axes = page.axes
    except DessamError:
        raise
    except Exception as exc:
        raise _unreadable(path, exc) from exc
    # keep only Y, X and (optional) samples; anything else (e.g. a leading singleton) is squeezed
    for axis in reversed(range(data.ndim)):
        if axes[axis] not in "YXS" and data.shape[axis] == 1:
            data = np.take(data, 0, axis=axis)
            axes = axes[:axis] + axes[axis + 1 :]
    if "S" in axes:
        data = np.moveaxis(data, axes.index("S"), -1)
    if data.ndim not in (2, 3):
        raise DessamError(
            f"{path}: TIFF page has axes {page.axes!r} and shape {page.shape}, expected a 2-D "
            "image with optional colour channels; save one plane per file"
        )
    return data


def _read_pillow(path: Path, max_pixels: int) -> np.ndarray:
    img = _open_pillow(path)
    with img:
        _check_pixels(path, img.height, img.width, max_pixels)
        try:
            if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGBA" if "transparency" in img.info or img.mode == "PA" else "RGB")
            elif img.mode == "1":
                img = img.convert("L")
            return np.array(img)
        except Exception as exc:
            raise _unreadable(path, exc) from exc


def read_image_raw(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The first page as stored: dtype kept, grayscale stays 2-D, channels last.

    Use this for intensity measurements; use `read_image` for the model.
    """
    path = Path(path)
    _check_exists(path)
    if _is_tiff(path):
        return _read_tiff_first_page(path, max_pixels)
    return _read_pillow(path, max_pixels)


def to_uint8(data: np.ndarray) -> np.ndarray:
    """Scale any numeric array to uint8 by the rule in the module docstring."""
    if data.dtype == np.uint8:
        return data
    if data.dtype == bool:
        return data.astype(np.uint8) * 255
    arr = np.asarray(data, dtype=np.float64)
    arr = np.where(np.isfinite(arr), arr, 0.0)
    arr = np.clip(arr, 0.0, None)
    peak = float(arr.max()) if arr.size else 0.0
    if np.issubdtype(data.dtype, np.floating) and 0.0 < peak <= 1.0:
        arr = arr * 255.0
    elif peak > 255.0:
        arr = arr * (255.0 / peak)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def to_rgb(data: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
    """Gray -> 3 channels, gray+alpha -> gray, RGBA -> RGB; anything else is refused."""
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise DessamError(f"{path}: image has shape {data.shape}; expected (H, W) or (H, W, C)")
    channels = data.shape[2]
    if channels in (1, 2):
        data = np.repeat(data[:, :, :1], 3, axis=2)
    elif channels in (3, 4):
        data = data[:, :, :3]
    else:
        raise DessamError(
            f"{path}: image has {channels} channels; expected gray, RGB or RGBA: "
            "export the channels to use as an RGB image"
        )
    return np.ascontiguousarray(data)


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3); see the module docstring for the rules."""
    path = Path(path)
    raw = read_image_raw(path, max_pixels=max_pixels)
    return to_rgb(to_uint8(raw), path)


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a uint8 gray (H, W), RGB or RGBA image, or a uint16 gray image, as PNG atomically."""
    image = np.asarray(image)
    if image.dtype == np.uint16 and image.ndim == 2:
        pil = Image.fromarray(image)
    elif image.dtype == np.uint8 and (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        pil = Image.fromarray(np.ascontiguousarray(image))
    else:
        raise ValueError(f"write_png needs uint8 gray/RGB/RGBA or uint16 gray, got {image.dtype} {image.shape}")
    with atomic_path(path) as tmp:
        pil.save(tmp, format="PNG")
    return Path(path)
