"""Per-nucleus morphometry and mean intensities of a label map (scikit-image regionprops).

Label maps are numpy arrays (uint16/uint32, 0 = background). Coordinates follow Fiji and QuPath:
pixel (row r, column c) covers x in [c, c+1] and y in [r, r+1], so the centroid of a single pixel
at (0, 0) is (0.5, 0.5).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from skimage.measure import regionprops_table

from ..errors import DessamError


def check_labels(labels: np.ndarray, what: str = "label map") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise DessamError(f"the {what} must be a 2-D integer array; got shape {labels.shape} and dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise DessamError(f"the {what} has negative ids; use 0 for background and 1, 2, ... for nuclei")
    return labels


def check_same_size(labels: np.ndarray, image: np.ndarray, what: str) -> None:
    if image.shape[:2] != labels.shape:
        raise DessamError(
            f"the {what} is {image.shape[1]}x{image.shape[0]} pixels but the label map is "
            f"{labels.shape[1]}x{labels.shape[0]}; pass the image the labels were predicted on"
        )


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
    labels = check_labels(labels)
    image = np.asarray(image)
    check_same_size(labels, image, "image")
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
