"""The weights that ship inside dessam (`src/dessam/assets/`), each with its model card beside it.

- ``default_teacher.pt``: the promptable nucleus segmenter of `--sam default` (a small SAM; see
  `dessam.models.default_teacher`).
- ``pretrained.pt``: a whole DES-SAM model (detector and prompt token on the default teacher),
  trained from the boxes of public data; what `dessam predict` uses when no `--model` is given.

`bundled_models()` lists the DES-SAM model files that are present, by name.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"
PRETRAINED_NAME = "pretrained"
BUNDLED_MODEL_FILES = {PRETRAINED_NAME: ASSETS / "pretrained.pt"}


def bundled_models() -> dict:
    """{name: path} of the bundled DES-SAM model files that exist in this installation."""
    return {name: path for name, path in BUNDLED_MODEL_FILES.items() if path.is_file()}


def model_card(path: Path) -> Path:
    """The Markdown model card that describes a bundled weight file (NAME.md beside NAME.pt)."""
    return Path(path).with_suffix(".md")
