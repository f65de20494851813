"""Aperio ImageScope XML annotations: polygons of nuclei drawn on an image, and its pixel size.

    <Annotations MicronsPerPixel="0.2527">
      <Annotation ...><Regions>
        <Region Id="1" Type="0" ...><Vertices><Vertex X="64" Y="125"/>...</Vertices></Region>
        ...

Each region with three or more vertices is one nucleus (a polygon in image pixels, vertices at
pixel centres as ImageScope writes them); regions of fewer vertices (points, lines) are skipped and
counted. This is how MoNuSeg (Kumar et al. 2017) ships its outlines, and what ImageScope exports.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from skimage.draw import polygon as fill_polygon

from ..errors import DessamError


@dataclass
class AperioRegions:
    polygons: list                   # (K, 2) float arrays of x, y
    pixel_size_um: Optional[float]   # MicronsPerPixel when given and positive
    skipped: int = 0                 # regions with fewer than three vertices


def read_aperio_xml(path: str | Path) -> AperioRegions:
    """The nucleus polygons of an Aperio XML file; a file that is not one is an error naming it."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DessamError(f"{path}: invalid XML ({exc}); fix or re-export the file") from None
    except OSError as exc:
        raise DessamError(f"{path}: cannot read ({exc.strerror}); check the file") from None
    if root.tag != "Annotations":
        raise DessamError(f"{path}: not an Aperio ImageScope file (root <{root.tag}>, expected <Annotations>); "
                          "check --from")
    polygons, skipped = [], 0
    for region in root.iter("Region"):
        try:
            points = [(float(v.get("X")), float(v.get("Y"))) for v in region.iter("Vertex")]
        except (TypeError, ValueError):
            raise DessamError(f"{path}: region {region.get('Id')} has a vertex without numeric X and Y; "
                              "fix the file") from None
        if len(points) < 3:
            skipped += 1
            continue
        polygons.append(np.asarray(points, dtype=np.float64))
    mpp = root.get("MicronsPerPixel")
    try:
        pixel_size = float(mpp) if mpp else None
    except ValueError:
        pixel_size = None
    return AperioRegions(polygons, pixel_size if pixel_size and pixel_size > 0 else None, skipped)


def rasterise(polygons: list, height: int, width: int) -> np.ndarray:
    """An instance map (uint32) of polygons in file order, a later one drawn over an earlier one;
    a polygon covering no pixel centre gets no id (ids stay 1..N in order of the drawn ones)."""
    labels = np.zeros((height, width), np.uint32)
    next_id = 1
    for points in polygons:
        rows, cols = fill_polygon(points[:, 1], points[:, 0], shape=(height, width))
        if len(rows):
            labels[rows, cols] = next_id
            next_id += 1
    return labels
