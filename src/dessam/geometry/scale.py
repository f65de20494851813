"""The object scale a model works at, and how every image is brought to it.

A nucleus must look to the model the size it looked in training. A model records how its training
images were scaled (`ModelScale`), and `predict`, `eval` and `label` bring every image there the
same way:

- `fit` (the authors' way, the default): each training image was resized so that its longest side
  is the input size S. An image of about the training images' size is resized the same way; one
  much larger at the training scale is cut into overlapping windows of S at that scale.
- `fixed`: training images were used at one fixed scale (their native resolution, or resampled to
  the model's pixel size when theirs was given), cut into windows of S when larger. Every image is
  resampled to that scale (using its pixel size when known), padded when smaller than S and cut into
  windows when larger: never stretched to fill the input.
- `nucleus`: every image, in training and prediction, is resampled so that its typical nucleus (the
  median side, sqrt(w x h), of its nuclei's boxes) is `nucleus_px` pixels, then treated as `fixed`.
  Training knows each image's boxes; prediction takes the nucleus size it is given
  (`--nucleus-size`) or estimates it from the image (`dessam.inference.nucleus_size`). Magnification
  and nucleus size then matter little: a 20x and a 40x scan of one tissue reach the model alike.

With pixel sizes in um/px (the training images', and each new image's, from `--pixel-size` or a
slide's metadata) the factor follows from them; without, a new image is assumed to have been
acquired like the training images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from ..config import ModelConfig, choices
from ..errors import DessamError

MODES = choices(ModelConfig, "input_scaling")
FIT_TOLERANCE = 1.05        # an image up to 5 % larger than the input at the training scale is still fitted whole
SIZE_RANGE = (5.0, 100.0)   # typical nucleus sides (pixels) a nucleus-size head is trained on, and estimates within
ESTIMATE_CROP = 256         # side of the crops a nucleus-size head reads, in training and in an estimate


@dataclass(frozen=True)
class ModelScale:
    mode: str = "fit"
    input_scale: Optional[float] = None     # the factor training images were resized by (median); None: unknown
    pixel_size_um: Optional[float] = None   # the pixel size of the model's input, when the training images' was given
    nucleus_px: Optional[float] = None      # the median side of the training boxes in the model's input pixels

    def __post_init__(self):
        if self.mode not in MODES:
            raise DessamError(f"model.input_scaling: unknown '{self.mode}'; use {', '.join(MODES)}")

    def factor(self, pixel_size_um: Optional[float] = None, nucleus_size: Optional[float] = None) -> float:
        """How much to resize a new image of `pixel_size_um` (None: unknown) whose typical nucleus is
        `nucleus_size` pixels (None: unknown; only `nucleus` scaling reads it) to bring it to the
        model's scale."""
        check_pixel_size(pixel_size_um)
        check_nucleus_size(nucleus_size)
        if self.mode == "nucleus" and nucleus_size is not None and self.nucleus_px:
            return float(self.nucleus_px) / float(nucleus_size)
        if pixel_size_um is not None and self.pixel_size_um:
            return float(pixel_size_um) / float(self.pixel_size_um)
        return float(self.input_scale) if self.input_scale else 1.0

    def needs_windows(self, shape: tuple, size: int, pixel_size_um: Optional[float] = None,
                      nucleus_size: Optional[float] = None) -> bool:
        """True when an image of `shape` (H, W) is larger than one input of `size` at the model's scale."""
        if self.mode == "fit" and not self.input_scale and pixel_size_um is None:
            return False  # a model that does not know its scale: every image is fitted
        factor = self.factor(pixel_size_um, nucleus_size)
        return max(shape[:2]) * factor > size * (FIT_TOLERANCE if self.mode == "fit" else 1.0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Optional[dict], input_scale: Optional[float] = None) -> "ModelScale":
        """From a model file's record; files written before it carry only `input_scale`."""
        if not data:
            return cls("fit", input_scale)
        known = {key: data.get(key) for key in ("mode", "input_scale", "pixel_size_um", "nucleus_px")}
        known["mode"] = known["mode"] or "fit"
        return cls(**known)


def estimate_crop(fixed_side: int = 0) -> int:
    """The side of the crops a nucleus-size head reads: `ESTIMATE_CROP`, or less for an encoder of one
    smaller input size (`fixed_side`, a ViT's; 0: any size)."""
    return min(ESTIMATE_CROP, int(fixed_side)) if fixed_side else ESTIMATE_CROP


def box_sides(boxes) -> np.ndarray:
    """sqrt(w x h) of x1y1x2y2 boxes: a nucleus's size whatever its shape."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.sqrt(np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0))


def median_box_side(boxes, at_least: int = 5) -> Optional[float]:
    """The typical nucleus side of an image from boxes around its nuclei, when there are `at_least` of
    them (fewer say little about the image's nuclei); else None."""
    sides = box_sides(boxes)
    return float(np.median(sides)) if len(sides) >= at_least else None


def check_nucleus_size(nucleus_size: Optional[float], flag: str = "--nucleus-size") -> None:
    if nucleus_size is not None and not 2 <= float(nucleus_size) <= 1000:
        raise DessamError(f"{flag} {nucleus_size}: give the typical nucleus diameter in pixels, from 2 to 1000")


def check_pixel_size(pixel_size_um: Optional[float], flag: str = "--pixel-size") -> None:
    if pixel_size_um is not None and not float(pixel_size_um) > 0:
        raise DessamError(f"{flag} {pixel_size_um}: give the pixel size in microns per pixel, a positive number")
