"""The files training writes, and the record of which SAM weights a model was trained on.

- `RUN/model.pt` (`MODEL_FORMAT`): what training changed (neck, detector, token), the full
  configuration, the SAM weights' name and SHA-256, the scale the model saw its images at
  (`dessam.geometry.scale.ModelScale`) and the licence its weights inherit (`dessam.licences.Terms`).
- `RUN/checkpoints/*.pt` (`CHECKPOINT_FORMAT`): the same plus the optimizer, the position in the
  schedule and the random state, to resume training.

Both are plain tensors and containers, read with `safe_torch_load` (weights only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..config import Config, settings_by_key
from ..errors import DessamError
from ..geometry.scale import ModelScale
from .checkpoints import file_sha256, safe_torch_load, save_torch_atomic, weights_sha256
from .default_teacher import is_default_teacher, teacher_for_digest, teacher_path
from .fetch import find_sam_checkpoint
from .sam import OFFICIAL_VARIANTS, build_sam

MODEL_FORMAT = "dessam-model"
CHECKPOINT_FORMAT = "dessam-checkpoint"


def sam_identity(name: str, checkpoint: Optional[str], sam) -> dict:
    """Name and SHA-256 of the SAM weights a model is trained on (stored in model.pt)."""
    if checkpoint:
        return {"name": name, "checkpoint": Path(checkpoint).name, "sha256": file_sha256(checkpoint)}
    if is_default_teacher(name):
        path = teacher_path(name)
        return {"name": name, "checkpoint": path.name, "sha256": file_sha256(path)}
    return {"name": name, "checkpoint": None, "sha256": weights_sha256(sam)}


def save_model_file(path: Path, trainable_state: dict, config: Config, identity: dict, epoch: int, iteration: int,
                    scale: ModelScale, licence: Optional[dict] = None) -> None:
    payload = {
        "input_scale": scale.input_scale,  # training images were resized by this factor (median); older readers
        "scale": scale.to_dict(),
        "format": MODEL_FORMAT,
        "version": 1,
        "config": config.to_dict(),
        "sam": identity,
        "state_dict": trainable_state,
        "epoch": epoch,
        "iteration": iteration,
        "licence": licence,
    }
    save_torch_atomic(payload, path)


def save_checkpoint(path: Path, trainable_state: dict, optimizer, config: Config, identity: dict, epoch: int,
                    batch: int, iteration: int, nonfinite_run: int, licence: Optional[dict] = None) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": config.to_dict(),
        "sam": identity,
        "state_dict": trainable_state,
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,           # the epoch to continue
        "batch": batch,           # the batch index inside that epoch to continue from
        "iteration": iteration,   # iterations done
        "nonfinite_run": nonfinite_run,
        "torch_rng": torch.get_rng_state(),
        "licence": licence,
    }
    save_torch_atomic(payload, path)


def read_checkpoint(path: Path) -> dict:
    """A training checkpoint's contents, or a one-line error."""
    state = safe_torch_load(path)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise DessamError(f"{path}: not a dessam training checkpoint; run without --resume")
    return state


@dataclass
class ModelFile:
    """The contents of a `RUN/model.pt`."""

    path: Path
    config: Config
    identity: dict
    state_dict: dict
    scale: ModelScale
    licence: Optional[dict] = None   # the terms its weights inherit (`dessam.licences.Terms`); None: not recorded


# What a setting that an older model file does not carry meant when that file was written: dessam's
# behaviour before the setting existed, so that such a model predicts as it did.
EARLIER_BEHAVIOUR = {
    "model.detector.box_head_norm": "layernorm", "model.detector.roi_align_aligned": False,
    "model.detector.rpn_min_pos_iou": 0.0, "model.detector.roi_min_pos_iou": None, "model.postprocess.mask_threshold": 0.0,
    "model.postprocess.connectivity": 4, "model.postprocess.fill_border_holes": False,
    "model.postprocess.keep_largest_island": False, "model.postprocess.overlap_winner": "higher-score",
    "model.prompt_token_init": "not-a-point", "model.local_decoding": False,
    "loss.roi_box": 0.1, "loss.edge_tau": 0.3, "loss.edge_crop_box": "annotated",
    "loss.edge_global_image": "normalised", "loss.edge_bottom_rows": 0,
}


def with_earlier_behaviour(config: dict) -> dict:
    """`config` (a model file's, in any layout) as {"section.key": value} with the settings it lacks
    set to what they were when it was written."""
    settings = settings_by_key(config)
    for key, value in EARLIER_BEHAVIOUR.items():
        settings.setdefault(key, value)
    # one RPN NMS for training and test
    settings.setdefault("model.detector.rpn_nms_test", settings.get("model.detector.rpn_nms", 0.7))
    settings.setdefault("loss.edge_mask_dilation", settings.get("loss.edge_dilation", 2))
    # torchvision's level rule: boxes under 14 x the finest stride pooled from the finest level
    finest_stride = 2 if settings.get("model.sam") in ("default", "tiny") else 4
    settings.setdefault("model.detector.roi_finest_scale", 14.0 * finest_stride)
    return settings


def read_model_file(path) -> ModelFile:
    path = Path(path)
    payload = safe_torch_load(path)
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise DessamError(f"{path}: not a dessam model file (expected RUN/model.pt written by `dessam train`)")
    config = Config.from_dict(with_earlier_behaviour(payload["config"]), str(path))
    scale = ModelScale.from_dict(payload.get("scale"), payload.get("input_scale"))
    return ModelFile(path, config, payload["sam"], payload["state_dict"], scale, payload.get("licence"))


def find_sam_weights(identity: dict, model_path: Path, sam_checkpoint=None) -> Optional[Path]:
    """Where the SAM checkpoint named in a model file is: explicit path, next to the model, or the cache."""
    name = identity.get("checkpoint")
    if sam_checkpoint:
        return Path(sam_checkpoint)
    if not name:
        return None
    return find_sam_checkpoint(name, extra_dirs=(model_path.parent, model_path.parent.parent))


def sam_for_model(model: ModelFile, sam_checkpoint=None, image_size: Optional[int] = None):
    """Build the SAM `model` was trained on (at `image_size`, default its own) and check that its
    weights are those, by SHA-256; a missing or different file is a one-line error."""
    identity, path = model.identity, model.path
    sam_name = identity["name"]
    trained_size = model.config.model.image_size
    size = image_size or trained_size
    checkpoint = digest = None
    if sam_name in OFFICIAL_VARIANTS or (identity.get("checkpoint") and not is_default_teacher(sam_name)):
        checkpoint = find_sam_weights(identity, path, sam_checkpoint)
        if checkpoint is None or not checkpoint.is_file():
            fetch = f" or run `dessam fetch-sam {sam_name}`" if sam_name in OFFICIAL_VARIANTS else ""
            raise DessamError(
                f"{path}: needs the SAM checkpoint {identity.get('checkpoint')} (sha256 {identity['sha256'][:12]}...); "
                f"pass --sam-checkpoint PATH{fetch}"
            )
        digest = file_sha256(checkpoint)
    elif sam_checkpoint:
        checkpoint = Path(sam_checkpoint)
        digest = file_sha256(checkpoint)
    elif is_default_teacher(sam_name):  # a bundled teacher (today's or an earlier one), or the named file beside the model
        checkpoint = teacher_for_digest(identity["sha256"])
        beside = find_sam_weights(identity, path) if checkpoint is None else None
        if beside is not None and beside.is_file() and file_sha256(beside) == identity["sha256"]:
            checkpoint = beside
        if checkpoint is None:
            raise DessamError(
                f"{path}: was trained on the teacher file {identity.get('checkpoint')} (sha256 "
                f"{identity['sha256'][:12]}...), which is not bundled with this dessam; pass it with --sam-checkpoint PATH"
            )
        digest = identity["sha256"]
    sam = build_sam(sam_name, checkpoint, size)
    if digest is None:
        digest = weights_sha256(sam if size == trained_size else build_sam(sam_name, None, trained_size))
    if digest != identity["sha256"]:
        where = checkpoint or sam_name
        raise DessamError(
            f"{where}: SAM weights differ from those {path} was trained on (sha256 {digest[:12]}... instead of "
            f"{identity['sha256'][:12]}...); give the original {identity.get('checkpoint') or sam_name} file"
        )
    return sam
