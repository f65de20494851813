"""The weights that ship inside dessam (`src/dessam/assets/`), each with its model card beside it.

- ``default_teacher.pt``: the promptable nucleus segmenter of `--sam default` (a small SAM; see
  `dessam.models.default_teacher`).
- ``pretrained.pt``: a whole DES-SAM model (detector and prompt token on the default teacher),
  trained from the boxes of public data; what `dessam predict` uses when no `--model` is given.
- ``default_teacher_permissive.pt`` and ``pretrained_permissive.pt``: the same two trained only on
  data whose licences put no condition on the weights (`--sam default-permissive`,
  `--model pretrained-permissive`).

`bundled_models()` lists the DES-SAM model files that are present, by name; `--model` takes
those names as well as paths (`resolve_model`).
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"
PRETRAINED_NAME = "pretrained"
BUNDLED_MODEL_FILES = {PRETRAINED_NAME: ASSETS / "pretrained.pt",
                       "pretrained-permissive": ASSETS / "pretrained_permissive.pt"}
DEFAULT_TEACHER_PATH = ASSETS / "default_teacher.pt"
# The bundled teachers by the name `--sam` takes: `default`, its variant trained only on data whose
# licences put no condition on the weights (see each file's model card, NAME.md), and `default-v1`, the
# first teacher (synthetic shapes only), which the synthetic demo runs on and models trained on it need.
TEACHER_FILES = {"default": DEFAULT_TEACHER_PATH, "default-permissive": ASSETS / "default_teacher_permissive.pt",
                 "default-v1": ASSETS / "default_teacher_v1.pt"}


def bundled_models() -> dict:
    """{name: path} of the bundled DES-SAM model files that exist in this installation."""
    return {name: path for name, path in BUNDLED_MODEL_FILES.items() if path.is_file()}


def resolve_model(model) -> Path:
    """A `--model` value: the name of a bundled model, or a path."""
    bundled = bundled_models()
    return bundled[str(model)] if str(model) in bundled else Path(model)


def model_card(path: Path) -> Path:
    """The Markdown model card that describes a bundled weight file (NAME.md beside NAME.pt)."""
    return Path(path).with_suffix(".md")
