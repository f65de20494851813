"""What `dessam predict` writes per image, in formats the usual tools open.

- the instance label image (Fiji, napari) and outlines drawn on the image;
- measurements and per-run summaries as CSV (and Markdown) tables;
- JSON: any result, the COCO results of a prediction, its QuPath GeoJSON (File > Import objects).

Everything works on numpy label maps (uint16/uint32, 0 = background). Coordinates follow Fiji and
QuPath: pixel (row r, column c) covers x in [c, c+1] and y in [r, r+1].
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
from skimage.segmentation import find_boundaries

from ..atomic import atomic_path, write_text_atomic
from ..data.images import to_rgb, to_uint8
from ..errors import DessamError
from ..geometry.outlines import labels_to_geojson
from ..inference.instances import label_dtype
from ..metrics.measurements import check_labels, check_same_size


# ---------------------------------------------------------------- label TIFF and overlays


PREDICTION_COLOUR = (255, 255, 0)  # yellow
GROUND_TRUTH_COLOUR = (0, 255, 0)  # green


def write_label_tiff(path, labels: np.ndarray) -> Path:
    """Write a label map as a zlib-compressed TIFF: uint16, or uint32 past 65535 nuclei."""
    labels = check_labels(labels)
    top = int(labels.max()) if labels.size else 0
    if top > np.iinfo(np.uint32).max:
        raise DessamError(f"{path}: label ids go up to {top}, more than a uint32 TIFF can hold")
    data = labels.astype(label_dtype(top), copy=False)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, data, compression="zlib", photometric="minisblack")
    return Path(path)


def overlay_image(image_rgb_uint8: np.ndarray, labels: np.ndarray, gt_labels: np.ndarray | None = None) -> np.ndarray:
    """The image with nucleus outlines drawn on it: predictions yellow, ground truth green.

    Outlines are the labels' inner boundary pixels, so touching nuclei stay distinct; where a
    prediction and a ground-truth outline coincide, the prediction is drawn on top.
    """
    labels = check_labels(labels)
    canvas = to_rgb(to_uint8(np.asarray(image_rgb_uint8))).copy()
    check_same_size(labels, canvas, "image")
    if gt_labels is not None:
        gt_labels = check_labels(gt_labels, "ground-truth label map")
        check_same_size(gt_labels, canvas, "image")
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


# ---------------------------------------------------------------- measurements and summaries


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


# ---------------------------------------------------------------- JSON, COCO results and GeoJSON


def write_geojson(path, labels: np.ndarray, measurements: Sequence[Mapping] | None = None) -> Path:
    """Write `labels_to_geojson(...)` to a .geojson file (QuPath: File > Import objects)."""
    return write_json(path, labels_to_geojson(labels, measurements))


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


def plain(value):
    """A JSON-safe copy: numpy scalars and arrays become Python values, NaN/inf become null."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_json(path, obj) -> Path:
    """Write `obj` as JSON (numpy values converted, NaN written as null)."""
    return write_text_atomic(path, json.dumps(plain(obj), allow_nan=False))
