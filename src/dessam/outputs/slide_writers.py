"""Whole-slide outputs written one nucleus at a time, never holding the slide.

- `GeoJSONWriter`: a QuPath FeatureCollection of nucleus detections (File > Import objects),
  outlines in level-0 pixel coordinates traced as `dessam.geometry.outlines.labels_to_geojson` traces them
  (along pixel edges, area = pixel count), measurements as QuPath measurements; ``.gz`` names
  are gzip-compressed (QuPath 0.4+ imports ``.geojson.gz``).
- `MeasurementsCSVWriter`: one row per nucleus, the columns of
  `dessam.metrics.measurements.nucleus_measurements` (lengths in µm when the pixel size is known);
  `measure_nucleus` computes such a row for one nucleus from its pixels.
- The instance label image: `dessam.data.label_pyramid.LabelPyramidWriter`.

Every writer writes to a temporary name and renames it when closed; used as a context manager
it writes on success and leaves nothing behind after an error.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np

from ..atomic import atomic_path
from ..data.nucleus import Nucleus
from ..geometry.outlines import labels_to_geojson
from ..metrics.measurements import nucleus_measurements
from .writers import plain


class _Aborted(Exception):
    """Passed to the temporary file's context to make it discard the file."""


def _shifted(coordinates: list, dx: int, dy: int) -> list:
    """GeoJSON coordinates (nested lists ending in [x, y]) moved by (dx, dy)."""
    if coordinates and not isinstance(coordinates[0], list):
        return [coordinates[0] + dx, coordinates[1] + dy]
    return [_shifted(c, dx, dy) for c in coordinates]


def nucleus_feature(nucleus: Nucleus) -> Optional[dict]:
    """The QuPath detection feature of one nucleus in level-0 coordinates (None for an empty mask)."""
    row = {"score": nucleus.score, **plain(nucleus.measurements)}
    row["id"] = 1
    features = labels_to_geojson(nucleus.mask.astype(np.uint8), [row])["features"]
    if not features:
        return None
    feature = features[0]
    geometry = feature["geometry"]
    geometry["coordinates"] = _shifted(geometry["coordinates"], nucleus.box[0], nucleus.box[1])
    properties = feature["properties"]
    properties["name"] = f"Nucleus {nucleus.id}"
    properties["measurements"]["id"] = nucleus.id
    return feature


class _StreamedFile:
    """A text file written through a temporary name (gzip when asked)."""

    def __init__(self, path: str | os.PathLike, compress: bool = False, newline: Optional[str] = None):
        self.path = Path(path)
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.path))
        opener = gzip.open if compress else open
        self._file = self._stack.enter_context(opener(tmp, "wt", encoding="utf-8", newline=newline))
        self.closed = False

    def _finish(self) -> None:
        """Called before the file is closed and renamed."""

    def close(self) -> Path:
        if not self.closed:
            self.closed = True
            try:
                self._finish()
            except BaseException as exc:
                self._stack.__exit__(type(exc), exc, exc.__traceback__)
                raise
            self._stack.close()
        return self.path

    def abort(self) -> None:
        """Discard what was written; the destination is left as it was."""
        if not self.closed:
            self.closed = True
            self._stack.__exit__(_Aborted, _Aborted(), None)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class GeoJSONWriter(_StreamedFile):
    """Streams a GeoJSON FeatureCollection to `path`; `compress` defaults to a ``.gz`` suffix."""

    def __init__(self, path: str | os.PathLike, compress: Optional[bool] = None):
        compress = Path(path).suffix.lower() == ".gz" if compress is None else compress
        super().__init__(path, compress)
        self.count = 0
        self._file.write('{"type":"FeatureCollection","features":[')

    def add(self, nucleus: Nucleus) -> None:
        feature = nucleus_feature(nucleus)
        if feature is not None:
            self.add_feature(feature)

    def add_feature(self, feature: dict) -> None:
        text = json.dumps(plain(feature), separators=(",", ":"), allow_nan=False)
        self._file.write(("," if self.count else "") + "\n" + text)
        self.count += 1

    def _finish(self) -> None:
        self._file.write("\n]}\n")


class MeasurementsCSVWriter(_StreamedFile):
    """Streams nucleus rows (``id``, then `Nucleus.measurements`, ``score`` if not among them) to
    a CSV file; the first row fixes the columns."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path, newline="")
        self.count = 0
        self._writer: Optional[csv.DictWriter] = None

    def add(self, nucleus: Nucleus) -> None:
        row = {"id": nucleus.id, **plain(nucleus.measurements)}
        row.setdefault("score", round(float(nucleus.score), 4))
        if self._writer is None:
            self._writer = csv.DictWriter(self._file, fieldnames=list(row), restval="")
            self._writer.writeheader()
        self._writer.writerow(row)
        self.count += 1


def measure_nucleus(nucleus: Nucleus, pixels: np.ndarray, pixel_size_um: Optional[float] = None) -> dict:
    """`dessam.metrics.measurements.nucleus_measurements` of one nucleus, centroid in level-0 coordinates.

    `pixels` are the image pixels under the nucleus's box (``h x w`` or ``h x w x channels``),
    e.g. ``slide.read_region(box[:2], 0, (w, h))``.
    """
    pixels = np.asarray(pixels)
    pad = ((1, 1), (1, 1)) + ((0, 0),) * (pixels.ndim - 2)  # a background frame, as inside a larger image
    labels = np.pad(nucleus.mask, 1).astype(np.uint8)
    rows = nucleus_measurements(labels, np.pad(pixels, pad, mode="edge"), [nucleus.score], pixel_size_um)
    if not rows:
        return {"id": nucleus.id}
    row = rows[0]
    row["id"] = nucleus.id
    scale = pixel_size_um or 1.0
    for key, offset in (("centroid_x", nucleus.box[0] - 1), ("centroid_y", nucleus.box[1] - 1)):
        name = next(k for k in row if k.startswith(key))
        row[name] = round(row[name] + offset * scale, 4)
    return row
