"""Segment: every nucleus of the chosen image, by a DES-SAM model, as a Labels layer.

The image goes through `Predictor.predict`, the pipeline of `dessam predict` (a large image is cut
into the same overlapping windows and merged the same way); the progress bar counts its windows
and Cancel stops it at the next one. The Labels layer's features table holds the columns of
`dessam predict`'s CSV (id, centroid, area, ..., score) and the detector's box, and the layer
remembers its image, so that saving it (File > Save Selected Layers, dessam's writer) writes the
label TIFF, GeoJSON and CSV that `dessam predict` writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import napari
from magicgui.widgets import FloatSpinBox

from ..errors import DessamError
from .job_widget import JobWidget, find_layer, layer_box
from .layers import layer_image, nucleus_features
from .model_choice import ModelChoice, licence_note, load

SUFFIX = " nuclei"   # the Labels layer is named after its image


@dataclass
class Segmented:
    image_layer: object
    image: np.ndarray
    labels: np.ndarray
    features: dict
    pixel_size_um: Optional[float]
    licence: str = ""   # the line naming non-commercial weights, or ""


def image_metadata(image: np.ndarray, pixel_size_um: Optional[float]) -> dict:
    """What a Labels layer keeps for dessam's writer: the image its nuclei were measured on."""
    return {"dessam_image": image, "dessam_pixel_size_um": pixel_size_um}


class SegmentWidget(JobWidget):
    run_text = "Segment"

    def __init__(self, viewer: napari.viewer.Viewer):
        self.image = layer_box(viewer, "image", "Image")
        self.model = ModelChoice(teachers=False)
        self.pixel_size = FloatSpinBox(label="pixel size (µm)", value=0.0, min=0.0, max=100.0, step=0.01,
                                       tooltip="microns per pixel of the image; 0: taken as the training images'")
        super().__init__(viewer, [self.image, self.model, self.pixel_size])

    def prepare(self):
        layer = self.image.value
        if layer is None:
            raise DessamError("no image: open an image (File > Open) and choose it in 'image'")
        image = layer_image(layer)
        spec = self.model.spec()
        pixel_size = self.pixel_size.value or None

        def work(job) -> Segmented:
            predictor = load(spec)
            prediction = predictor.predict(image, pixel_size_um=pixel_size, on_window=job.window)
            features = nucleus_features(prediction.labels, image, prediction.scores, prediction.boxes, pixel_size)
            return Segmented(layer, image, prediction.labels, features, pixel_size, licence_note(spec))

        return work

    def finish(self, result: Segmented) -> str:
        name = result.image_layer.name + SUFFIX
        metadata = image_metadata(result.image, result.pixel_size_um)
        existing = find_layer(self.viewer, name, "Labels")
        if existing is not None:  # segmenting again replaces the earlier result
            existing.data, existing.features = result.labels, result.features
            existing.metadata.update(metadata)
        else:
            self.viewer.add_labels(result.labels, name=name, features=result.features, metadata=metadata,
                                   scale=result.image_layer.scale[:2], translate=result.image_layer.translate[:2])
        return f"{len(result.features['index'])} nuclei found in {self.seconds:.1f} s: layer '{name}'{result.licence}"
