"""The terms of a weight file, read from the file (see `dessam.licences` for how terms pass on).

- A teacher file: its `licence` record when it has one (written by `dessam pretrain-teacher`, with the
  teacher a view teacher was built on), else the licences of the training data it lists
  (`train.datasets`); the first teacher (`default-v1`) lists none: dessam trained it on its own
  synthetic shapes.
- Official SAM weights: Meta released them under Apache-2.0; the tests' tiny SAM is random.
- A model file: its `licence` record (written by `dessam train`: its teacher's terms, those of its
  starting weights and, for `dessam pretrain-model`, of its corpus), else its teacher's terms, found
  by the teacher's SHA-256 among the bundled teachers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..licences import PERMISSIVE, Terms, from_data, inherited
from .checkpoints import safe_torch_load
from .default_teacher import is_default_teacher, teacher_for_digest, teacher_path
from .sam import OFFICIAL_VARIANTS

OFFICIAL_SAM = Terms(PERMISSIVE, ("Meta's Segment Anything weights (Apache-2.0)",))
UNRECORDED = "not recorded"


def teacher_terms(path) -> Terms:
    """The terms of a teacher file (or of an official SAM checkpoint, which is not one)."""
    path = Path(path)
    payload = safe_torch_load(path)
    if not isinstance(payload, dict) or payload.get("format") != "dessam-sam":
        return OFFICIAL_SAM
    if isinstance(payload.get("licence"), dict):
        return Terms.from_dict(payload["licence"])
    datasets = (payload.get("train") or {}).get("datasets")
    if datasets:
        return from_data({d["name"]: d["licence"] for d in datasets}, f"the teacher {path.name}")
    return Terms(PERMISSIVE, (f"the teacher {path.name}: dessam's first teacher, trained on its own synthetic shapes",))


def sam_terms(name: str, checkpoint=None) -> Terms:
    """The terms of the SAM `--sam NAME [--sam-checkpoint PATH]` names."""
    if name == "tiny":
        return Terms(PERMISSIVE, ("the tests' tiny SAM",))
    if checkpoint:
        return teacher_terms(checkpoint)
    if is_default_teacher(name):
        return teacher_terms(teacher_path(name))
    if name in OFFICIAL_VARIANTS:
        return OFFICIAL_SAM
    return teacher_terms(name)   # an official checkpoint given by its path


def model_terms(model_file) -> Terms:
    """The terms of a read model file (`dessam.models.model_file.ModelFile`)."""
    if model_file.licence is not None:
        return Terms.from_dict(model_file.licence)
    identity = model_file.identity
    if is_default_teacher(identity.get("name")):
        teacher = teacher_for_digest(identity["sha256"])
        if teacher is None:
            return Terms(UNRECORDED, (f"its teacher {identity.get('checkpoint')} is not bundled: see that file's "
                                      "model card",))
        return teacher_terms(teacher)
    return sam_terms(identity.get("name"))


def training_terms(teacher: Terms, start: Optional[Terms] = None, data: Optional[Terms] = None) -> Terms:
    """The terms of a model trained on `teacher` (needed again at inference), from the weights
    `start` (None: random), on data of the terms `data` (None: the user's own, which dessam does not know)."""
    return inherited(*(part for part in (teacher, start, data) if part is not None))
