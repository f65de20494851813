"""dessam: nucleus instance segmentation trained from bounding boxes only (DES-SAM on a frozen SAM)."""

__version__ = "0.1.0"

from .errors import DessamError  # noqa: E402
from .config.runtime import Runtime  # noqa: E402


def build_sam(name, checkpoint=None, image_size=None):
    """Build Meta's SAM (`vit_b`, `vit_l`, `vit_h`, `tiny`, `default`); see `dessam.models.sam`."""
    from .models.sam import build_sam as _build_sam

    return _build_sam(name, checkpoint=checkpoint, image_size=image_size)


def load_model(path, device="cpu", sam_checkpoint=None, runtime=None):
    """Load a trained dessam model (`RUN/model.pt`, or a bundled model's name) ready for
    `.predict(image)`: with PyTorch on `device`, or where `runtime` (a `Runtime`: engine, device,
    precision, threads) says, e.g. `Runtime(engine="onnx")` for ONNX Runtime."""
    if runtime is not None:
        from .inference.engines import load_predictor

        return load_predictor(path, runtime, sam_checkpoint)
    from .inference.loading import load_model as _load_model

    return _load_model(path, device=device, sam_checkpoint=sam_checkpoint)


__all__ = ["DessamError", "Runtime", "build_sam", "load_model", "__version__"]
