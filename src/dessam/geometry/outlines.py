"""Nucleus outlines along pixel edges, as GeoJSON polygons (QuPath detections).

An outline follows pixel edges in image pixel coordinates (x right, y down; pixel (r, c) covers x
in [c, c+1] and y in [r, r+1]), so a polygon's area equals its nucleus's pixel count.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from ..metrics.measurements import check_labels


def _trace_ring(region: np.ndarray) -> np.ndarray:
    """The pixel-edge outline of `region` as a closed ring of (x, y) vertices.

    `region` must be 4-connected, with a 4-connected complement and a background frame; then
    every outline vertex has exactly one way on and the outline is one simple ring. Its
    shoelace area equals the pixel count and is positive (counter-clockwise with y up).
    """
    h, w = region.shape
    # Horizontal edges at y = r + 1 between rows r and r + 1, walked with the region below
    # going right and with the region above going left; vertical edges likewise.
    r, c = np.nonzero(region[1:, :] != region[:-1, :])
    below = region[r + 1, c]
    hx0 = np.where(below, c, c + 1)
    hx1 = np.where(below, c + 1, c)
    hy = r + 1
    rv, cv = np.nonzero(region[:, 1:] != region[:, :-1])
    right = region[rv, cv + 1]
    vy0 = np.where(right, rv + 1, rv)
    vy1 = np.where(right, rv, rv + 1)
    vx = cv + 1
    start = np.concatenate([hy * (w + 1) + hx0, vy0 * (w + 1) + vx])
    end = np.concatenate([hy * (w + 1) + hx1, vy1 * (w + 1) + vx])
    following = dict(zip(start.tolist(), end.tolist()))
    if len(following) != start.size:
        raise AssertionError("outline has a vertex where it touches itself")
    vertex = first = int(start[0])
    ring = []
    while True:
        ring.append(vertex)
        vertex = following[vertex]
        if vertex == first:
            break
    if len(ring) != start.size:
        raise AssertionError("region outline is not a single ring")
    ring = np.array(ring)
    points = np.stack([ring % (w + 1), ring // (w + 1)], axis=1)
    # Keep only corners (drop vertices in the middle of a straight run).
    before = points - np.roll(points, 1, axis=0)
    after = np.roll(points, -1, axis=0) - points
    corners = points[before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0] != 0]
    return np.concatenate([corners, corners[:1]])


def _polygons(mask: np.ndarray) -> list[list[np.ndarray]]:
    """Polygons (shell, holes...) of a mask framed by background, one per 4-connected piece.

    Holes are the background regions each piece encloses; a hole ring may touch its shell or
    another hole at single corners, and pieces may touch one another at corners, which keeps
    the polygons valid (OGC simple features) with areas equal to the pixel counts.
    """
    pieces, count = ndimage.label(mask)
    polygons = []
    for piece in range(1, count + 1):
        background, regions = ndimage.label(pieces != piece)
        outside = background[0, 0]
        rings = [_trace_ring(background != outside)]
        rings += [_trace_ring(background == hole)[::-1] for hole in range(1, regions + 1) if hole != outside]
        polygons.append(rings)
    return polygons


def labels_to_geojson(labels: np.ndarray, measurements: Sequence[Mapping] | None = None) -> dict:
    """A GeoJSON FeatureCollection with one nucleus detection per label id, for QuPath.

    Each outline follows pixel edges in image pixel coordinates (x right, y down), so the
    polygon area equals the nucleus pixel count. A nucleus whose pixels form several pieces
    (possible after overlaps are painted) becomes a MultiPolygon; enclosed background
    becomes polygon holes. `measurements` (rows of `nucleus_measurements`, matched by "id")
    go into the QuPath measurement list; a "score" there is also copied to the properties.
    """
    labels = check_labels(labels)
    by_id = {int(row["id"]): row for row in measurements or ()}
    features = []
    for index, box in enumerate(ndimage.find_objects(labels)):
        if box is None:
            continue
        label = index + 1
        y0, x0 = box[0].start, box[1].start
        mask = np.pad(labels[box] == label, 1)
        polygons = [[(ring + (x0 - 1, y0 - 1)).tolist() for ring in rings] for rings in _polygons(mask)]
        if len(polygons) == 1:
            geometry = {"type": "Polygon", "coordinates": polygons[0]}
        else:
            geometry = {"type": "MultiPolygon", "coordinates": polygons}
        row = by_id.get(label, {})
        values = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        properties = {
            "objectType": "detection",
            "name": f"Nucleus {label}",
            "classification": {"name": "Nucleus"},
            "measurements": {"id": label, **values},
        }
        if "score" in row:
            properties["score"] = row["score"]
        features.append({"type": "Feature", "geometry": geometry, "properties": properties})
    return {"type": "FeatureCollection", "features": features}
