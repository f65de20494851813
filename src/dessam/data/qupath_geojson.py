"""Objects exported from QuPath as GeoJSON (File > Export objects as GeoJSON), read as shapes.

A file holds a FeatureCollection, a list of features or one feature (``.gz`` files are
decompressed). Per feature:

- a Polygon or MultiPolygon becomes polygons (holes kept), hence a mask; an axis-aligned
  rectangle (4 corners) drawn as an annotation becomes a box without a mask, as QuPath's rectangle
  tool draws them (a detection or cell stays an outline, rectangular or not: a nucleus of a few
  pixels can be a rectangle);
- a cell (``objectType: cell``) gives its ``nucleusGeometry`` when it has one;
- QuPath's classes mark what is not a nucleus: ``Region*`` objects are the regions that were
  annotated (kept apart as regions), ``Ignore*`` objects are skipped;
- with `classes`, only objects whose classification name is listed are kept;
- points, lines, tiles, TMA cores and features without geometry are skipped and counted.

Object types and classes are read as QuPath 0.2 to 0.6 write them.

Coordinates are QuPath's: full-resolution (level-0) pixels, y down.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import DessamError
from .coco import read_json
from .shapes import Shape

REGION_CLASS = "Region*"
IGNORE_CLASS = "Ignore*"
# QuPath object types that are not nuclei (current names, older names, and v0.2's type ids)
_NOT_NUCLEI = ("tile", "tmaCore", "tma_core", "root", "PathTileObject", "TMACoreObject", "PathRootObject")
_OUTLINE_TYPES = ("detection", "cell", "PathDetectionObject", "PathCellObject")  # never a drawn box


@dataclass
class QuPathObjects:
    shapes: list[Shape] = field(default_factory=list)  # the nuclei
    regions: list[Shape] = field(default_factory=list)  # Region* objects
    skipped: Counter = field(default_factory=Counter)  # reason -> count

    def notes(self, path: Path) -> list[str]:
        return [f"{path.name}: {count} {reason} skipped" for reason, count in sorted(self.skipped.items())]


def read_geojson_document(path: Path) -> Any:
    """The parsed file; ``.gz`` is decompressed first. Errors name the file."""
    if path.suffix.lower() != ".gz":
        return read_json(path)
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise DessamError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}); fix the file") from exc
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise DessamError(f"{path}: cannot read ({exc}); save it as gzip-compressed UTF-8 GeoJSON") from exc


def _features(doc: Any, path: Path) -> list:
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection" and isinstance(doc.get("features"), list):
        return doc["features"]
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        return [doc]
    if isinstance(doc, list):
        return doc
    raise DessamError(f"{path}: not GeoJSON features (expected a FeatureCollection or a list of features); "
                      "export the objects from QuPath with File > Export objects as GeoJSON")


def _class_name(properties: dict) -> Optional[str]:
    """QuPath's class name ("A: B" for a derived class stored as names [A, B])."""
    value = properties.get("classification")
    if isinstance(value, dict):
        names = value.get("names")
        value = ": ".join(map(str, names)) if isinstance(names, list) and names else value.get("name")
    return value if isinstance(value, str) else None


def _object_type(feature: dict, properties: dict) -> Optional[str]:
    """QuPath's object type: ``objectType`` (older: ``object_type``, ``type``, or v0.2's feature id)."""
    for key in ("objectType", "object_type", "type"):
        if isinstance(properties.get(key), str):
            return properties[key]
    return feature.get("id") if isinstance(feature.get("id"), str) else None


def _ring(points: Any, where: str) -> np.ndarray:
    try:
        ring = np.asarray([p[:2] for p in points], dtype=np.float64)
    except (TypeError, ValueError, IndexError):
        raise DessamError(f"{where}: polygon coordinates are not [x, y] pairs; fix the file") from None
    if ring.ndim != 2 or len(ring) < 3 or not np.isfinite(ring).all():
        raise DessamError(f"{where}: a polygon ring needs at least 3 finite [x, y] points; fix the file")
    return ring


def _rectangle(polygons: list[list[np.ndarray]]) -> Optional[tuple[float, float, float, float]]:
    """The box of a single axis-aligned rectangle polygon, else None."""
    if len(polygons) != 1 or len(polygons[0]) != 1:
        return None
    ring = polygons[0][0]
    if len(ring) > 1 and np.array_equal(ring[0], ring[-1]):
        ring = ring[:-1]
    xs, ys = np.unique(ring[:, 0]), np.unique(ring[:, 1])
    if len(ring) != 4 or len(xs) != 2 or len(ys) != 2 or len(np.unique(ring, axis=0)) != 4:
        return None
    return float(xs[0]), float(ys[0]), float(xs[1]), float(ys[1])


def _shape(geometry: Any, where: str, rectangle_is_box: bool = True) -> tuple[Optional[Shape], str]:
    """(shape, "") or (None, reason skipped)."""
    if not isinstance(geometry, dict):
        return None, "features without geometry"
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "Polygon":
        parts = [coords]
    elif kind == "MultiPolygon":
        parts = coords
    else:
        return None, f"{kind} geometries"
    if not isinstance(parts, list) or not parts or not all(isinstance(p, list) and p for p in parts):
        raise DessamError(f"{where}: {kind} without coordinates; fix the file")
    polygons = [[_ring(ring, where) for ring in part] for part in parts]
    box = _rectangle(polygons) if rectangle_is_box else None
    if box is not None:
        return Shape(box, None, where), ""
    return Shape.from_polygons(polygons, where), ""


def _measurements(properties: dict) -> Optional[dict]:
    """QuPath's measurement list: {name: number} (QuPath 0.4 on), or [{name, value}] (earlier)."""
    value = properties.get("measurements")
    if isinstance(value, list):
        value = {item.get("name"): item.get("value") for item in value if isinstance(item, dict)}
    if not isinstance(value, dict):
        return None
    return {str(k): float(v) for k, v in value.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k is not None}


def read_qupath_geojson(path: str | Path, classes: Optional[list[str]] = None) -> QuPathObjects:
    """The nuclei and regions of one QuPath GeoJSON file (see the module docstring)."""
    path = Path(path)
    result = QuPathObjects()
    for k, feature in enumerate(_features(read_geojson_document(path), path)):
        where = f"{path} feature {k}"
        if not isinstance(feature, dict):
            raise DessamError(f"{where}: not a GeoJSON feature object; fix the file")
        properties = feature.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        name = _class_name(properties)
        object_type = _object_type(feature, properties)
        if object_type in _NOT_NUCLEI:
            result.skipped[f"{object_type} objects"] += 1
            continue
        if name == IGNORE_CLASS:
            result.skipped[f"{IGNORE_CLASS} objects"] += 1
            continue
        geometry = feature.get("nucleusGeometry") or feature.get("geometry")
        shape, reason = _shape(geometry, where, rectangle_is_box=object_type not in _OUTLINE_TYPES)
        if shape is None:
            result.skipped[reason] += 1
            continue
        shape.measurements = _measurements(properties)
        if name == REGION_CLASS:
            result.regions.append(shape)
        elif classes is not None and name not in classes:
            result.skipped["objects of other classes"] += 1
        else:
            result.shapes.append(shape)
    return result
