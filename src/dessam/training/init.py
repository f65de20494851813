"""Where training starts: the bundled pretrained model, another model file, or random weights.

`train.init` (`dessam train --init`):
- ``auto`` (the default): the bundled pretrained model (`dessam.models.bundled`) trained on the
  run's teacher (`pretrained` for `--sam default`, `pretrained-permissive` for
  `--sam default-permissive`) when the run has that model's detector shape (the `cpu` preset,
  which `--sam default` applies), else random weights;
- ``pretrained``: that bundled model, or a one-line error saying why it cannot be;
- ``scratch``: freshly initialised detector and token (the authors' way);
- a path to a `model.pt`, or a bundled model's name: that model's detector and token (to fine-tune).
Only what training changes is loaded (neck, detector, token, and the detector's own image encoder where
both have one); SAM is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import DessamError
from ..licences import Terms
from ..models.bundled import bundled_models, resolve_model

CHOICES = ("auto", "pretrained", "scratch")


@dataclass
class Start:
    source: Optional[Path]   # the model file the weights came from; None: random
    note: str                # one line for the user
    terms: Optional[Terms] = None   # the licence of the weights it started from (None: random weights)


def matching_bundled_model(identity: dict) -> Optional[tuple]:
    """The bundled DES-SAM model trained on the SAM weights `identity` names, if any: its path and
    its read `ModelFile`."""
    from ..models.model_file import read_model_file

    for path in bundled_models().values():
        source = read_model_file(path)
        if source.identity["sha256"] == identity["sha256"]:
            return path, source
    return None


def starting_weights(model, identity: dict, init: str) -> Start:
    """Load the starting weights `init` asks for into `model` (a `DESSAM`) and say where they came from."""
    from ..models.model_file import read_model_file
    from ..models.weights_terms import model_terms

    if init == "scratch":
        return Start(None, "started from random weights (--init scratch)")
    bundled = init in ("auto", "pretrained")
    if bundled:
        if not bundled_models():
            if init == "pretrained":
                raise DessamError("--init pretrained: this installation has no bundled pretrained model; "
                                  "use --init scratch")
            return Start(None, "started from random weights (no bundled pretrained model)")
        found = matching_bundled_model(identity)
        if found is None:
            if init == "auto":
                return Start(None, "started from random weights (the bundled pretrained models belong to the bundled "
                                   "teachers, not this SAM)")
            raise DessamError(f"--init pretrained: no bundled pretrained model was trained on these SAM weights "
                              f"({identity.get('checkpoint') or identity['name']}); train with --sam default, or use "
                              "--init scratch")
        path, source = found
    else:
        path = resolve_model(init)
        if not path.is_file():
            raise DessamError(f"{path}: --init model file not found; give a RUN/model.pt, pretrained or scratch")
        source = read_model_file(path)
    label = f"the bundled pretrained model {path.name}" if bundled or path in bundled_models().values() else str(path)
    if source.identity["sha256"] != identity["sha256"] and source.identity["sha256"] == views_base_digest(model.config):
        load_detector(model, with_own_encoder(model, source.state_dict)[0], path)
        where = label if label == str(path) else f"{label} ({path})"
        return Start(path, f"started the detector from {where}, trained on the teacher this one was built on "
                           "(the same image encoder); the prompt token starts anew", model_terms(source))
    if source.identity["sha256"] != identity["sha256"]:
        raise DessamError(f"{path}: --init {init}: {label} was trained on other SAM weights "
                          f"({source.identity.get('checkpoint') or source.identity['name']}); train with those, "
                          "or use --init scratch")
    state, encoder_note = with_own_encoder(model, source.state_dict)
    try:
        model.load_trainable_state_dict(state)
    except (KeyError, RuntimeError):
        if init == "auto":
            return Start(None, "started from random weights (this configuration's detector differs from the bundled "
                               "pretrained model's)")
        raise DessamError(f"{path}: --init {init}: {label} has another detector shape than this configuration; "
                          "train with its settings (the cpu preset for the bundled model), or use --init scratch") from None
    return Start(path, f"started from {label} ({path}){encoder_note}; --init scratch starts from random weights",
                 model_terms(source))


def with_own_encoder(model, state: dict) -> tuple:
    """`state` (a model file's trained weights) for `model`, and a note: when `model`'s detector has an image
    encoder of its own (`model.detector_encoder: own`) and the file's detector read the teacher's embedding,
    that encoder starts as the teacher's (as it would from scratch) and the rest comes from the file."""
    if model.detector_encoder is None or any(key.startswith("detector_encoder.") for key in state):
        return state, ""
    own = {key: value for key, value in model.trainable_state_dict().items() if key.startswith("detector_encoder.")}
    return {**state, **own}, ", the detector's own image encoder from the teacher's"


def views_base_digest(config) -> Optional[str]:
    """The SHA-256 of the teacher file that the run's teacher was built on, when the run's teacher
    decodes on per-box views (`dessam pretrain-teacher --views-from`): the whole-image encoder is that
    teacher's, frozen, so a detector trained on it reads the same embedding."""
    from ..models.checkpoints import safe_torch_load
    from ..models.default_teacher import is_default_teacher, teacher_path

    settings = config.model
    if settings.sam_checkpoint:
        path = Path(settings.sam_checkpoint)
    elif is_default_teacher(settings.sam):
        path = teacher_path(settings.sam)
    else:
        return None
    if not path.is_file():
        return None
    try:
        teacher = safe_torch_load(path)
    except DessamError:
        return None
    if not isinstance(teacher, dict) or teacher.get("format") != "dessam-sam":  # an official SAM checkpoint
        return None
    return ((teacher.get("train") or {}).get("views_from") or {}).get("sha256")


def load_detector(model, state: dict, path: Path) -> None:
    """The neck and detector of a model file's weights, the token left as it starts."""
    wanted = {k for k in model.trainable_state_dict() if not k.startswith("decoder.prompt_token.")}
    given = {k: v for k, v in state.items() if not k.startswith("decoder.prompt_token.")}
    if set(given) != wanted:
        raise DessamError(f"{path}: --init: its detector has another shape than this configuration's; train with its "
                          "settings, or use --init scratch")
    try:
        model.load_state_dict(given, strict=False)
    except RuntimeError:
        raise DessamError(f"{path}: --init: its detector has another shape than this configuration's; train with its "
                          "settings, or use --init scratch") from None
