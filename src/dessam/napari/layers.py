"""What the widgets read from napari layers and what they give back, as dessam's own data.

Coordinates: napari puts the centre of pixel (row r, column c) at data position (r, c), so the
pixel covers [r - 0.5, r + 0.5]; dessam's boxes (and QuPath's, Fiji's) run along pixel edges, the
pixel covering x in [c, c + 1]. A napari rectangle from (r0, c0) to (r1, c1) is therefore the box
x1 = c0 + 0.5, y1 = r0 + 0.5, x2 = c1 + 0.5, y2 = r1 + 0.5, and back.

Only layer attributes are read here (`data`, `rgb`, `shape_type`, the world transforms), so this
module imports neither napari nor Qt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.images import MAX_PIXELS
from ..errors import DessamError
from ..geometry.inputs import as_rgb
from ..metrics.measurements import nucleus_measurements
from ..outputs.files import without_alpha

BOX_COLUMNS = ("box_x1", "box_y1", "box_x2", "box_y2")


def layer_image(layer) -> np.ndarray:
    """The 2-D image of an Image layer as stored (H x W, H x W x 3 or 4), the finest level of a
    multiscale one; other shapes, and images too large to hold in memory, are refused."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    shape = tuple(data.shape)
    planar = len(shape) == 2 or (len(shape) == 3 and getattr(layer, "rgb", False))
    if not planar:
        raise DessamError(f"image layer '{layer.name}': a {len(shape)}-D image of shape {shape}; "
                          "dessam segments 2-D images (gray or RGB): open one plane or an RGB image")
    if shape[0] * shape[1] > MAX_PIXELS:
        raise DessamError(f"image layer '{layer.name}': {shape[1]} x {shape[0]} px is more than dessam holds in "
                          "memory; predict whole slides with `dessam predict SLIDE --out DIR` and open its outputs")
    return np.asarray(data)


def rgb_image(layer) -> np.ndarray:
    """The image of an Image layer as the model takes it: H x W x 3 uint8."""
    return as_rgb(layer_image(layer))


def _to_image_pixels(shapes_layer, image_layer, vertices: np.ndarray) -> np.ndarray:
    """(row, column) data positions of the shapes layer -> those of the image layer."""
    if image_layer is None or (np.array_equal(shapes_layer.scale[-2:], image_layer.scale[:2])
                               and np.array_equal(shapes_layer.translate[-2:], image_layer.translate[:2])
                               and np.allclose(shapes_layer.affine.affine_matrix, np.eye(3))
                               and np.allclose(image_layer.affine.affine_matrix, np.eye(3))):
        return vertices[:, -2:]
    return np.array([image_layer.world_to_data(shapes_layer.data_to_world(v))[-2:] for v in vertices])


@dataclass
class LayerBoxes:
    boxes: np.ndarray   # (N, 4) x1 y1 x2 y2 in image pixels, clipped to the image
    clipped: int        # boxes that reached past the image and were clipped
    skipped: int        # shapes that are not rectangles, and rectangles without area


def shape_boxes(shapes_layer, image_shape: tuple, image_layer=None) -> LayerBoxes:
    """The rectangles of a Shapes layer as boxes of an image of `image_shape` (H, W, ...): other
    shapes are skipped and counted, boxes reaching past the image clipped, a box wholly outside it
    refused (it was drawn on another image, or the layers do not line up)."""
    height, width = int(image_shape[0]), int(image_shape[1])
    image_name = f"'{image_layer.name}'" if image_layer is not None else "the image"
    boxes, clipped, skipped = [], 0, 0
    for number, (kind, vertices) in enumerate(zip(shapes_layer.shape_type, shapes_layer.data), start=1):
        if kind != "rectangle":
            skipped += 1
            continue
        points = _to_image_pixels(shapes_layer, image_layer, np.asarray(vertices, dtype=np.float64))
        (r0, c0), (r1, c1) = points.min(axis=0), points.max(axis=0)
        box = np.array([c0 + 0.5, r0 + 0.5, c1 + 0.5, r1 + 0.5])
        if box[2] <= 0 or box[3] <= 0 or box[0] >= width or box[1] >= height:
            raise DessamError(
                f"shapes layer '{shapes_layer.name}': rectangle {number} (x {box[0]:.0f} to {box[2]:.0f}, "
                f"y {box[1]:.0f} to {box[3]:.0f}) lies outside image {image_name} ({width} x {height} px); "
                "move it onto the image or delete it")
        inside = np.clip(box, 0, [width, height, width, height])
        if inside[2] - inside[0] < 1 or inside[3] - inside[1] < 1:
            skipped += 1
            continue
        clipped += bool(np.any(inside != box))
        boxes.append(inside)
    return LayerBoxes(np.array(boxes, dtype=np.float32).reshape(-1, 4), clipped, skipped)


def box_rectangles(boxes: np.ndarray) -> list:
    """Boxes (N, 4, x1 y1 x2 y2, pixel edges) as napari rectangles: four (row, column) corners each."""
    out = []
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4) - 0.5:
        out.append(np.array([[y1, x1], [y1, x2], [y2, x2], [y2, x1]]))
    return out


def nucleus_features(labels: np.ndarray, image: np.ndarray, scores=None, boxes=None,
                     pixel_size_um=None) -> dict:
    """The features table of a Labels layer of nuclei: per label id present, the columns of
    `dessam predict`'s CSV (`dessam.metrics.measurements.nucleus_measurements`: id, centroid, area, perimeter,
    ..., mean intensities, score) and, given `boxes` (row k = id k + 1), the detector's box.
    `index` holds the label id, as napari looks rows up by it."""
    rows = nucleus_measurements(labels, without_alpha(np.asarray(image)), scores, pixel_size_um)
    columns = {"index": [row["id"] for row in rows]}
    for row in rows:
        for key, value in row.items():
            columns.setdefault(key, []).append(value)
    if boxes is not None:
        chosen = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[np.asarray(columns["index"], dtype=np.int64) - 1]
        for k, name in enumerate(BOX_COLUMNS):
            columns[name] = np.round(chosen[:, k], 2).tolist()
    return columns


def scores_by_id(features, top_id: int):
    """Scores indexed by label id - 1 from a features table with `id` and `score` columns (ids
    without a score, such as nuclei painted in by hand, get NaN); None without scores."""
    if features is None or "score" not in features or "id" not in features or top_id < 1:
        return None
    scores = np.full(top_id, np.nan)
    for label, score in zip(np.asarray(features["id"]), np.asarray(features["score"], dtype=np.float64)):
        if 1 <= int(label) <= top_id:
            scores[int(label) - 1] = score
    return scores
