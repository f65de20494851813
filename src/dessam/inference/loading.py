"""`load_model`: a trained model file and the SAM weights it names, ready to predict;
`load_teacher`: the frozen SAM alone, ready to segment given boxes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

from ..config import Config
from ..devices import resolve_device
from ..errors import DessamError
from ..geometry.scale import ModelScale
from ..models.build import build_dessam
from ..models.fetch import find_sam_checkpoint, sam_file_name
from ..models.model_file import read_model_file, sam_for_model, sam_identity
from ..models.promptable_sam import PromptableSam
from ..models.sam import OFFICIAL_VARIANTS, build_sam, recognise_variant
from .predictor import Predictor
from ..config.runtime import InferenceSettings, fast_settings


def load_model(path, device="cpu", sam_checkpoint=None, image_size: Optional[int] = None,
               settings: Optional[InferenceSettings] = None, input_scale: Optional[float] = None) -> Predictor:
    """Load `RUN/model.pt` (or a bundled model by name, e.g. "pretrained"); the SAM weights it
    names are found and their SHA-256 checked.

    image_size: run the model at another input size than it was trained at (the default
    teacher is fully convolutional; ViT position tables are interpolated).
    settings: how inference runs (default: the fast path for the device, see
    `dessam.config.runtime`); its `test_proposals` is fixed when the model is built.
    input_scale: resize images by this factor instead of the model's training scale.
    """
    from ..models.bundled import resolve_model

    path = resolve_model(path)
    model_file = read_model_file(path)
    config = model_file.config
    sam = sam_for_model(model_file, sam_checkpoint, image_size)
    device = resolve_device(device)
    settings = settings or fast_settings(device)
    if settings.test_proposals is not None:
        config = config.replace({"model.detector.rpn_post_nms_test": int(settings.test_proposals)})
    model = build_dessam(config, sam)
    try:
        model.load_trainable_state_dict(model_file.state_dict)
    except (KeyError, RuntimeError) as exc:
        raise DessamError(f"{path}: the model's weights do not fit its own config ({str(exc)[:120]}); re-train") from None
    model.to(device)
    scale = model_file.scale if input_scale is None else replace(model_file.scale, input_scale=input_scale)
    return Predictor(model, model.config, model_file.identity, device, scale, settings, path)


def load_teacher(sam_name: str, sam_checkpoint=None, device="cpu", image_size: Optional[int] = None,
                 settings: Optional[InferenceSettings] = None, input_scale: float = 1.0) -> Predictor:
    """SAM `sam_name` (vit_b / vit_l / vit_h with their checkpoint, an official checkpoint path,
    `default` or `tiny`) as a `Predictor` without a detector: it segments given boxes
    (`segment(..., use_token=False)`), as DES-SAM's teacher does.

    An official variant without `sam_checkpoint` is looked for where `dessam fetch-sam` puts it.
    input_scale: the factor images are resized by before windows of the input size are cut from
    the larger ones (default 1: the images' own pixels).
    """
    checkpoint = sam_checkpoint
    if checkpoint is None and Path(str(sam_name)).suffix in (".pth", ".pt"):
        sam_name, checkpoint = recognise_variant(sam_name), sam_name
    if checkpoint is None and sam_name in OFFICIAL_VARIANTS:
        checkpoint = find_sam_checkpoint(sam_file_name(sam_name))
        if checkpoint is None:
            raise DessamError(f"{sam_file_name(sam_name)}: SAM {sam_name} not found; "
                              f"run `dessam fetch-sam {sam_name}` or pass --sam-checkpoint PATH")
    sam = build_sam(sam_name, checkpoint, image_size)
    device = resolve_device(device)
    return teacher_predictor(sam.to(device), sam_identity(sam_name, checkpoint, sam), teacher_margin(sam_name, checkpoint),
                             settings, input_scale, checkpoint)


def teacher_predictor(sam, identity: dict, margin: Optional[int] = None, settings: Optional[InferenceSettings] = None,
                      input_scale: float = 1.0, checkpoint=None) -> Predictor:
    """A built SAM (on its device) as a `Predictor` without a detector (see `load_teacher`);
    `margin`: decode each box on a window of the embedding with this many tokens around it (None:
    the whole embedding)."""
    settings_of_sam = {"model.sam": identity["name"], "model.sam_checkpoint": None if checkpoint is None else str(checkpoint),
                       "model.prompt_token": False, "model.image_size": int(sam.image_encoder.img_size)}
    if margin is not None:
        settings_of_sam.update({"model.local_decoding": True, "model.local_margin": int(margin)})
    config = Config().replace(settings_of_sam)
    device = sam.pixel_mean.device
    model = PromptableSam(sam).to(device)
    return Predictor(model, config, identity, device, ModelScale("fixed", input_scale), settings or fast_settings(device))


def teacher_margin(sam_name: str, checkpoint=None) -> Optional[int]:
    """The decoding window margin a default-teacher file asks for (None: decode the whole embedding)."""
    from ..models.default_teacher import is_default_teacher, teacher_architecture, teacher_path

    if not is_default_teacher(sam_name):
        return None
    return teacher_architecture(checkpoint or teacher_path(sam_name)).get("local_margin")
