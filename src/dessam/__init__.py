"""dessam: nucleus instance segmentation trained from bounding boxes only (DES-SAM on a frozen SAM)."""

__version__ = "0.1.0"

from .errors import DessamError  # noqa: E402


def build_sam(name, checkpoint=None, image_size=None):
    """Build Meta's SAM (`vit_b`, `vit_l`, `vit_h`, `tiny`, `default`); see `dessam.models.sam`."""
    from .models.sam import build_sam as _build_sam

    return _build_sam(name, checkpoint=checkpoint, image_size=image_size)


def load_model(path, device="cpu", sam_checkpoint=None):
    """Load a trained dessam model (`RUN/model.pt`) ready for `.predict(image)`."""
    from .inference.loading import load_model as _load_model

    return _load_model(path, device=device, sam_checkpoint=sam_checkpoint)


__all__ = ["DessamError", "build_sam", "load_model", "__version__"]
