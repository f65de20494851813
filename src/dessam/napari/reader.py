"""napari reader: dessam's GeoJSON as Shapes, its label TIFF as Labels.

- `NAME.geojson` (or `.geojson.gz`), as `dessam predict` writes it or QuPath exports it, read by
  `dessam.data.qupath_geojson` as `dessam convert --from geojson` reads it: outlines become
  polygons (the outer ring; napari's polygons have no holes), rectangles stay rectangles (boxes
  to train from), and the measurements of each object fill the layer's features table. `Region*`
  objects come as a second Shapes layer.
- `NAME_labels.tif` (and `.ome.tif`, pyramidal for slides: read level by level, lazily) as a
  Labels layer; when `NAME_nuclei.csv` lies beside it, its rows fill the features table.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import tifffile

from ..data.qupath_geojson import read_qupath_geojson
from ..errors import DessamError
from .layers import box_rectangles

GEOJSON_SUFFIXES = (".geojson", ".geojson.gz")
LABEL_SUFFIXES = ("_labels.tif", "_labels.tiff", "_labels.ome.tif", "_labels.ome.tiff")


def get_reader(path):
    """The reader of `path` when it is one of dessam's outputs, else None."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    name = str(path).lower()
    if name.endswith(GEOJSON_SUFFIXES):
        return read_geojson
    if name.endswith(LABEL_SUFFIXES):
        return read_label_tiff
    return None


def _one(path) -> Path:
    return Path(path[0] if isinstance(path, (list, tuple)) else path)


def _stem(path: Path, suffixes: tuple) -> str:
    name = path.name
    return next(name[:-len(s)] for s in suffixes if name.lower().endswith(s))


def _outline(shape) -> np.ndarray:
    """The outer ring with the largest area of a shape's polygons, as napari (row, column) vertices."""
    shells = [rings[0] for rings in shape.polygons]
    areas = [abs(np.dot(s[:, 0], np.roll(s[:, 1], 1)) - np.dot(s[:, 1], np.roll(s[:, 0], 1))) for s in shells]
    ring = shells[int(np.argmax(areas))]
    if len(ring) > 1 and np.array_equal(ring[0], ring[-1]):
        ring = ring[:-1]
    return ring[:, ::-1] - 0.5   # pixel edges (x, y) -> napari's pixel centres (row, column)


def shapes_layer(shapes: list, name: str, colour: str) -> tuple:
    """LayerData of napari Shapes from dessam `Shape`s."""
    data, kinds = [], []
    for shape in shapes:
        if shape.polygons is None:
            data += box_rectangles(np.asarray(shape.box))
            kinds.append("rectangle")
        else:
            data.append(_outline(shape))
            kinds.append("polygon")
    keys = list(dict.fromkeys(key for shape in shapes for key in (shape.measurements or {})))
    features = {key: [(shape.measurements or {}).get(key, np.nan) for shape in shapes] for key in keys}
    return (data, {"name": name, "shape_type": kinds, "features": features, "edge_color": colour,
                   "face_color": "transparent", "edge_width": 1}, "shapes")


def read_geojson(path) -> list:
    path = _one(path)
    found = read_qupath_geojson(path)
    stem = _stem(path, GEOJSON_SUFFIXES)
    layers = [shapes_layer(found.shapes, stem, "yellow")]
    if found.regions:
        layers.append(shapes_layer(found.regions, f"{stem} regions", "cyan"))
    return layers


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def nuclei_csv_features(path: Path) -> dict:
    """The columns of a `NAME_nuclei.csv` (`dessam predict`'s), with `index` = id; {} without one."""
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "id" not in rows[0]:
        return {}
    features = {"index": [int(float(row["id"])) for row in rows]}
    for key in rows[0]:
        features[key] = [_number(row[key]) for row in rows]
    return features


def read_label_tiff(path) -> list:
    path = _one(path)
    stem = _stem(path, LABEL_SUFFIXES)
    try:
        with tifffile.TiffFile(path) as tif:
            levels = len(tif.series[0].levels)
            dtype, shape = tif.series[0].dtype, tif.series[0].shape
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise DessamError(f"{path}: cannot read the label TIFF ({exc}); is it a file `dessam predict` wrote?") from None
    if len(shape) != 2 or not np.issubdtype(dtype, np.integer):
        raise DessamError(f"{path}: not a label image (shape {shape}, {dtype}); open it as an image instead")
    if levels == 1:
        data = tifffile.imread(path)
    else:
        import zarr

        data = [zarr.open(tifffile.imread(path, aszarr=True, level=level), mode="r") for level in range(levels)]
    features = nuclei_csv_features(path.with_name(f"{stem}_nuclei.csv"))
    return [(data, {"name": f"{stem} nuclei", "features": features, "multiscale": levels > 1}, "labels")]
