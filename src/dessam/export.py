"""Outputs for real use: label TIFFs, overlays, measurements, GeoJSON and COCO results.

Everything here works on numpy label maps (uint16/uint32, 0 = background) and opens in the
usual tools: the label TIFF in Fiji and napari, the GeoJSON in QuPath, the CSV anywhere.

Coordinates follow Fiji and QuPath: pixel (row r, column c) covers x in [c, c+1] and y in
[r, r+1], so a nucleus outline runs along pixel edges and a centroid of a single pixel at
(0, 0) is (0.5, 0.5).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage
from skimage.measure import regionprops_table
from skimage.segmentation import find_boundaries

from .atomic import atomic_path, write_text_atomic
from .data.images import to_rgb, to_uint8
from .errors import DessamError
from .postprocess import label_dtype

PREDICTION_COLOUR = (255, 255, 0)  # yellow
GROUND_TRUTH_COLOUR = (0, 255, 0)  # green


def _check_labels(labels: np.ndarray, what: str = "label map") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise DessamError(f"the {what} must be a 2-D integer array; got shape {labels.shape} and dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise DessamError(f"the {what} has negative ids; use 0 for background and 1, 2, ... for nuclei")
    return labels


def _check_same_size(labels: np.ndarray, image: np.ndarray, what: str) -> None:
    if image.shape[:2] != labels.shape:
        raise DessamError(
            f"the {what} is {image.shape[1]}x{image.shape[0]} pixels but the label map is "
            f"{labels.shape[1]}x{labels.shape[0]}; pass the image the labels were predicted on"
        )


# ---------------------------------------------------------------- label TIFF


def write_label_tiff(path, labels: np.ndarray) -> Path:
    """Write a label map as a zlib-compressed TIFF: uint16, or uint32 past 65535 nuclei."""
    labels = _check_labels(labels)
    top = int(labels.max()) if labels.size else 0
    if top > np.iinfo(np.uint32).max:
        raise DessamError(f"{path}: label ids go up to {top}, more than a uint32 TIFF can hold")
    data = labels.astype(label_dtype(top), copy=False)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, data, compression="zlib", photometric="minisblack")
    return Path(path)


# ---------------------------------------------------------------- overlays


def overlay_image(image_rgb_uint8: np.ndarray, labels: np.ndarray, gt_labels: np.ndarray | None = None) -> np.ndarray:
    """The image with nucleus outlines drawn on it: predictions yellow, ground truth green.

    Outlines are the labels' inner boundary pixels, so touching nuclei stay distinct; where a
    prediction and a ground-truth outline coincide, the prediction is drawn on top.
    """
    labels = _check_labels(labels)
    canvas = to_rgb(to_uint8(np.asarray(image_rgb_uint8))).copy()
    _check_same_size(labels, canvas, "image")
    if gt_labels is not None:
        gt_labels = _check_labels(gt_labels, "ground-truth label map")
        _check_same_size(gt_labels, canvas, "image")
        canvas[find_boundaries(gt_labels, mode="inner")] = GROUND_TRUTH_COLOUR
    canvas[find_boundaries(labels, mode="inner")] = PREDICTION_COLOUR
    return canvas


def write_overlay_png(
    path, image_rgb_uint8: np.ndarray, labels: np.ndarray, gt_labels: np.ndarray | None = None
) -> Path:
    """Write `overlay_image(...)` as a PNG."""
    overlay = overlay_image(image_rgb_uint8, labels, gt_labels)
    with atomic_path(path) as tmp:
        Image.fromarray(overlay).save(tmp, format="PNG")
    return Path(path)


# ---------------------------------------------------------------- measurements


def _channel_names(channels: int) -> list[str]:
    if channels == 1:
        return ["mean_intensity"]
    if channels == 3:
        return ["mean_intensity_red", "mean_intensity_green", "mean_intensity_blue"]
    return [f"mean_intensity_ch{i}" for i in range(channels)]


def nucleus_measurements(
    labels: np.ndarray,
    image: np.ndarray,
    scores: Sequence[float] | None = None,
    pixel_size_um: float | None = None,
) -> list[dict]:
    """Morphometry and mean intensity of every nucleus, one dict per label id (ascending).

    `image` is gray (H, W) or multi-channel (H, W, C) of any dtype (8-bit, 16-bit raw, float).
    `scores[k - 1]` is the score of label `k` (the order `masks_to_labels` paints in). Lengths
    are in pixels (`_px`, `_px2`), or in microns (`_um`, `_um2`) when `pixel_size_um` is given.
    """
    labels = _check_labels(labels)
    image = np.asarray(image)
    _check_same_size(labels, image, "image")
    if image.ndim not in (2, 3):
        raise DessamError(
            f"cannot measure intensities in an image of shape {image.shape}; expected (H, W) or (H, W, C)"
        )
    if pixel_size_um is not None and not pixel_size_um > 0:
        raise DessamError(f"the pixel size must be a positive number of microns; got {pixel_size_um}")
    if not labels.any():
        return []
    props = [
        "label", "area", "centroid", "perimeter", "equivalent_diameter_area", "eccentricity", "solidity",
        "intensity_mean",
    ]
    table = regionprops_table(labels, intensity_image=image, properties=props)
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if scores.size < table["label"].max():
            raise ValueError(f"{scores.size} scores given for label ids up to {table['label'].max()}")

    unit, scale = ("um", float(pixel_size_um)) if pixel_size_um else ("px", 1.0)
    channels = 1 if image.ndim == 2 else image.shape[2]
    intensity_keys = ["intensity_mean"] if image.ndim == 2 else [f"intensity_mean-{i}" for i in range(channels)]
    rows = []
    for i, label in enumerate(table["label"]):
        row = {
            "id": int(label),
            f"centroid_x_{unit}": round((table["centroid-1"][i] + 0.5) * scale, 4),
            f"centroid_y_{unit}": round((table["centroid-0"][i] + 0.5) * scale, 4),
            f"area_{unit}2": round(table["area"][i] * scale**2, 4),
            f"perimeter_{unit}": round(table["perimeter"][i] * scale, 4),
            f"equivalent_diameter_{unit}": round(table["equivalent_diameter_area"][i] * scale, 4),
            "eccentricity": round(float(table["eccentricity"][i]), 4),
            "solidity": round(float(table["solidity"][i]), 4),
        }
        for name, key in zip(_channel_names(channels), intensity_keys):
            row[name] = round(float(table[key][i]), 4)
        if scores is not None:
            row["score"] = round(float(scores[label - 1]), 4)
        rows.append({k: (float(v) if isinstance(v, np.floating) else v) for k, v in row.items()})
    return rows


def _columns(rows: Sequence[Mapping]) -> list[str]:
    """The keys of all rows, in order of first appearance."""
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    return columns


def _write_csv(path, rows: Sequence[Mapping]):
    """Write dict rows as CSV; the columns are the keys in order of first appearance."""
    columns = _columns(rows)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
    return Path(path)


def write_measurements_csv(path, rows: Sequence[Mapping]) -> Path:
    """Write `nucleus_measurements(...)` rows as a CSV file (one line per nucleus)."""
    return _write_csv(path, rows)


# ---------------------------------------------------------------- per-run summary


def summary_row(image_name: str, measurements: Sequence[Mapping]) -> dict:
    """One summary line for an image: nucleus count, mean/median area and mean score."""
    row: dict = {"image": image_name, "nuclei": len(measurements)}
    area_key = next((k for k in ("area_um2", "area_px2") if measurements and k in measurements[0]), None)
    if area_key:
        areas = np.array([m[area_key] for m in measurements], dtype=np.float64)
        row[f"mean_{area_key}"] = round(float(areas.mean()), 4)
        row[f"median_{area_key}"] = round(float(np.median(areas)), 4)
    if measurements and "score" in measurements[0]:
        row["mean_score"] = round(float(np.mean([m["score"] for m in measurements])), 4)
    return row


def write_summary_csv(path, rows: Sequence[Mapping]) -> Path:
    """Write the per-run summary (one line per image, e.g. from `summary_row`) as CSV."""
    return _write_csv(path, rows)


def write_summary_markdown(path, rows: Sequence[Mapping], title: str = "Nuclei per image") -> Path:
    """Write the per-run summary as a Markdown table for people to read."""
    columns = _columns(rows)
    lines = [f"# {title}", ""]
    if columns:
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "---|" * len(columns))
        lines.extend("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows)
    else:
        lines.append("No images.")
    return write_text_atomic(path, "\n".join(lines) + "\n")


# ---------------------------------------------------------------- GeoJSON


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
    labels = _check_labels(labels)
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


def write_geojson(path, labels: np.ndarray, measurements: Sequence[Mapping] | None = None) -> Path:
    """Write `labels_to_geojson(...)` to a .geojson file (QuPath: File > Import objects)."""
    return write_json(path, labels_to_geojson(labels, measurements))


# ---------------------------------------------------------------- COCO results and JSON


def instances_to_coco_results(image_id: int, instances, category_id: int = 1) -> list[dict]:
    """Detections in the COCO results format (RLE segmentation, bbox x, y, w, h, score), one per
    instance of an `Instances` (its detector box, its mask as cleaned, before overlaps are painted)."""
    return [
        {
            "image_id": int(image_id),
            "category_id": int(category_id),
            "segmentation": instances.rle(k),
            "bbox": [round(float(v), 2) for v in (box[0], box[1], box[2] - box[0], box[3] - box[1])],
            "score": float(score),
        }
        for k, (box, score) in enumerate(zip(instances.boxes, instances.scores))
    ]


def _plain(value):
    """A JSON-safe copy: numpy scalars and arrays become Python values, NaN/inf become null."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_json(path, obj) -> Path:
    """Write `obj` as JSON (numpy values converted, NaN written as null)."""
    return write_text_atomic(path, json.dumps(_plain(obj), allow_nan=False))
