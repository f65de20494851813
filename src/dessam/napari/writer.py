"""napari writer: a Labels layer of nuclei saved as `dessam predict` saves an image's nuclei.

Saving to `FOLDER/NAME.tif` (or `NAME_labels.tif`) writes `NAME_labels.tif`, `NAME.geojson` and
`NAME_nuclei.csv` with the writers of `dessam predict` (`dessam.outputs.writers`), from the layer as it is
now, corrections included. Measurements are taken on the image the layer was segmented on when
the layer knows it (the Segment widget's layers do), else without the intensity columns; scores
come from the layer's features table (NaN for nuclei drawn by hand).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DessamError
from ..metrics.measurements import nucleus_measurements
from ..outputs.files import output_paths, without_alpha
from ..outputs.writers import write_geojson, write_label_tiff, write_measurements_csv
from .layers import scores_by_id

SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".geojson", ".csv")


def output_stem(path) -> tuple:
    """(folder, NAME) of a path given to the writer."""
    path = Path(path)
    name = path.name
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[:-len(suffix)]
            break
    if name.endswith("_labels"):
        name = name[:-len("_labels")]
    if not name:
        raise DessamError(f"{path}: give the file a name, e.g. field.tif")
    return path.parent, name


def write_labels(path: str, data, meta: dict) -> list:
    if isinstance(data, list):
        raise DessamError(f"{path}: a multiscale labels layer is saved by `dessam predict` itself, not from napari")
    labels = np.asarray(data)
    metadata = meta.get("metadata") or {}
    image = metadata.get("dessam_image")
    scores = scores_by_id(meta.get("features"), int(labels.max()) if labels.size else 0)
    if image is not None and np.asarray(image).shape[:2] == labels.shape:
        rows = nucleus_measurements(labels, without_alpha(np.asarray(image)), scores,
                                    metadata.get("dessam_pixel_size_um"))
    else:  # intensities unknown: leave them out rather than write zeros
        rows = [{k: v for k, v in row.items() if not k.startswith("mean_intensity")}
                for row in nucleus_measurements(labels, np.zeros(labels.shape, np.uint8), scores)]
    folder, name = output_stem(path)
    targets = output_paths(folder, Path(f"{name}.png"))
    write_label_tiff(targets["labels"], labels)
    write_geojson(targets["geojson"], labels, rows)
    write_measurements_csv(targets["csv"], rows)
    return [str(targets[key]) for key in ("labels", "geojson", "csv")]
