"""`load_model`: a trained model file and the SAM weights it names, ready to predict."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..devices import resolve_device
from ..errors import DessamError
from ..models.dessam import DESSAM
from ..models.model_file import read_model_file, sam_for_model
from .predictor import Predictor
from .settings import InferenceSettings, fast_settings


def load_model(path, device="cpu", sam_checkpoint=None, image_size: Optional[int] = None,
               settings: Optional[InferenceSettings] = None) -> Predictor:
    """Load `RUN/model.pt`; the SAM weights it names are found and their SHA-256 checked.

    image_size: run the model at another input size than it was trained at (the default
    teacher is fully convolutional; ViT position tables are interpolated).
    settings: how inference runs (default: the fast path for the device, see
    `dessam.inference.settings`); its `test_proposals` is fixed when the model is built.
    """
    path = Path(path)
    model_file = read_model_file(path)
    config = model_file.config
    sam = sam_for_model(model_file, sam_checkpoint, image_size)
    device = resolve_device(device)
    settings = settings or fast_settings(device)
    config.model.image_size = int(sam.image_encoder.img_size)
    if settings.test_proposals is not None:
        config.model.rpn_post_nms_test = int(settings.test_proposals)
    model = DESSAM(sam, config)
    try:
        model.load_trainable_state_dict(model_file.state_dict)
    except (KeyError, RuntimeError) as exc:
        raise DessamError(f"{path}: the model's weights do not fit its own config ({str(exc)[:120]}); re-train") from None
    model.to(device)
    return Predictor(model, config, model_file.identity, device, model_file.scale, settings, path)
