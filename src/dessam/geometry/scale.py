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

With pixel sizes in um/px (the training images', and each new image's, from `--pixel-size` or a
slide's metadata) the factor follows from them; without, a new image is assumed to have been
acquired like the training images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from ..config import ModelConfig, choices
from ..errors import DessamError

MODES = choices(ModelConfig, "input_scaling")
FIT_TOLERANCE = 1.05  # an image up to 5 % larger than the input at the training scale is still fitted whole


@dataclass(frozen=True)
class ModelScale:
    mode: str = "fit"
    input_scale: Optional[float] = None     # the factor training images were resized by (median); None: unknown
    pixel_size_um: Optional[float] = None   # the pixel size of the model's input, when the training images' was given
    nucleus_px: Optional[float] = None      # the median side of the training boxes in the model's input pixels

    def __post_init__(self):
        if self.mode not in MODES:
            raise DessamError(f"model.input_scaling: unknown '{self.mode}'; use fit or fixed")

    def factor(self, pixel_size_um: Optional[float] = None) -> float:
        """How much to resize a new image of `pixel_size_um` (None: unknown) to bring it to the
        model's scale."""
        check_pixel_size(pixel_size_um)
        if pixel_size_um is not None and self.pixel_size_um:
            return float(pixel_size_um) / float(self.pixel_size_um)
        return float(self.input_scale) if self.input_scale else 1.0

    def needs_windows(self, shape: tuple, size: int, pixel_size_um: Optional[float] = None) -> bool:
        """True when an image of `shape` (H, W) is larger than one input of `size` at the model's scale."""
        if self.mode == "fit" and not self.input_scale and pixel_size_um is None:
            return False  # a model that does not know its scale: every image is fitted
        return max(shape[:2]) * self.factor(pixel_size_um) > size * (FIT_TOLERANCE if self.mode == "fit" else 1.0)

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


def check_pixel_size(pixel_size_um: Optional[float], flag: str = "--pixel-size") -> None:
    if pixel_size_um is not None and not float(pixel_size_um) > 0:
        raise DessamError(f"{flag} {pixel_size_um}: give the pixel size in microns per pixel, a positive number")
