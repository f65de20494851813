"""The pixel size (microns per pixel) written in a TIFF file's metadata, or None.

Read in this order, the first found wins:

1. OME-XML: ``PhysicalSizeX`` / ``PhysicalSizeY`` of the first image, in their
   ``PhysicalSizeXUnit`` (the OME default is µm);
2. an Aperio description (SVS): ``MPP = ...``;
3. ImageJ (Fiji) metadata: ``unit=micron`` (or um, µm, nm, mm) with the resolution tags
   giving pixels per unit;
4. the TIFF resolution tags with ``ResolutionUnit`` centimetre or inch.

Nothing is guessed: a file without any of these has no pixel size. Resolution tags are often
left at a desktop default (72, 96 or 300 dots per inch: 85 to 353 µm per pixel); a value above
`MAX_TAG_PIXEL_SIZE_UM` from the tags alone is taken as such a default, not as a microscope's
pixel size, and ignored.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from typing import Optional

import tifffile

MAX_TAG_PIXEL_SIZE_UM = 20.0

# microns per unit; OME units are UCUM-like symbols, ImageJ writes words or symbols
_MICRONS = {
    "m": 1e6, "cm": 1e4, "mm": 1e3, "µm": 1.0, "μm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0,
    "micrometer": 1.0, "micrometre": 1.0, "\\u00b5m": 1.0, "nm": 1e-3, "Å": 1e-4, "pm": 1e-6,
}
_TAG_UNITS = {tifffile.RESUNIT.CENTIMETER: 1e4, tifffile.RESUNIT.INCH: 25400.0}

PixelSize = tuple[float, float]  # (x, y) microns per pixel


def _valid(x: float, y: float) -> Optional[PixelSize]:
    if all(math.isfinite(v) and v > 0 for v in (x, y)):
        return float(x), float(y)
    return None


def _ome(tif: tifffile.TiffFile) -> Optional[PixelSize]:
    xml = tif.ome_metadata
    if not xml:
        return None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None or "PhysicalSizeX" not in pixels.attrib:
        return None
    sizes = []
    for axis in "XY":
        value = pixels.get(f"PhysicalSize{axis}", pixels.get("PhysicalSizeX"))
        unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
        if unit not in _MICRONS:
            return None
        try:
            sizes.append(float(value) * _MICRONS[unit])
        except ValueError:
            return None
    return _valid(*sizes)


def _aperio(page: tifffile.TiffPage) -> Optional[PixelSize]:
    """``MPP = 0.25`` among the ``|``-separated ``key = value`` items of an Aperio description."""
    if not page.is_svs:
        return None
    for item in page.description.split("|")[1:]:
        key, _, value = item.partition("=")
        if key.strip() == "MPP":
            try:
                return _valid(float(value), float(value))
            except ValueError:
                return None
    return None


def _resolution(page: tifffile.TiffPage) -> Optional[PixelSize]:
    """Pixels per unit from the XResolution/YResolution tags, or None."""
    values = []
    for name in ("XResolution", "YResolution"):
        tag = page.tags.get(name)
        if tag is None:
            return None
        numerator, denominator = tag.value
        if not numerator or not denominator:
            return None
        values.append(numerator / denominator)
    return values[0], values[1]


def _imagej(tif: tifffile.TiffFile, page: tifffile.TiffPage) -> Optional[PixelSize]:
    unit = str((tif.imagej_metadata or {}).get("unit", "")).strip()
    per_unit = _resolution(page)
    if unit not in _MICRONS or per_unit is None:
        return None
    return _valid(_MICRONS[unit] / per_unit[0], _MICRONS[unit] / per_unit[1])


def _tags(page: tifffile.TiffPage) -> Optional[PixelSize]:
    unit = page.tags.get("ResolutionUnit")
    per_unit = _resolution(page)
    if unit is None or unit.value not in _TAG_UNITS or per_unit is None:
        return None
    size = _valid(_TAG_UNITS[unit.value] / per_unit[0], _TAG_UNITS[unit.value] / per_unit[1])
    if size is None or max(size) > MAX_TAG_PIXEL_SIZE_UM:
        return None
    return size


def tiff_pixel_size_um(tif: tifffile.TiffFile) -> Optional[PixelSize]:
    """(x, y) microns per pixel of the first page of an open TIFF, or None (see module docstring)."""
    page = tif.pages[0]
    return _ome(tif) or _aperio(page) or _imagej(tif, page) or _tags(page)


def square_pixel_size(size: Optional[PixelSize]) -> Optional[float]:
    """One number for an (x, y) pixel size: their geometric mean (right for areas), or None."""
    return None if size is None else math.sqrt(size[0] * size[1])
