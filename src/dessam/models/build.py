"""The one place a DES-SAM model is built from its configuration, as segment-anything's
`build_sam` builds SAM: training, loading a model file and the benchmark all call `build_dessam`."""

from __future__ import annotations

from ..config import Config
from .dessam import DESSAM


def build_dessam(config: Config, sam) -> DESSAM:
    """DES-SAM on the built (frozen) `sam`, its trainable parts freshly initialised; its `config` is
    `config` with `model.image_size` set to the SAM's own input size."""
    return DESSAM(sam, config.replace({"model.image_size": int(sam.image_encoder.img_size)}))
