"""napari sample data: a synthetic Pap field and a box around each of its nuclei.

The field comes from dessam's generator (`dessam.data.synth.make_scene`, as `dessam synth` and
the demo make them); the boxes are what a person would draw, ready for Masks from boxes and
Train from boxes.
"""

from __future__ import annotations

import numpy as np

from ..data.coco import label_map_to_annotations
from ..data.synth import make_scene
from .layers import box_rectangles

SEED = 3
SIZE = 512
NAME = "Pap field"


def pap_field() -> list:
    image, labels = make_scene(np.random.default_rng(SEED), "cluster", size=(SIZE, SIZE))
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in
                      (a["bbox"] for a in label_map_to_annotations(labels, 1, with_masks=False))], np.float64)
    return [
        (image, {"name": NAME, "rgb": True}, "image"),
        (box_rectangles(boxes), {"name": f"{NAME} boxes", "shape_type": "rectangle", "edge_color": "cyan",
                                 "face_color": "transparent", "edge_width": 1}, "shapes"),
    ]
