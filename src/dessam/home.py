"""Where dessam keeps what it downloads or derives for a user: ``$DESSAM_HOME`` or ``~/.cache/dessam``
(SAM checkpoints, the ONNX graphs exported from a model on first use)."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "DESSAM_HOME"


def dessam_home() -> Path:
    """``$DESSAM_HOME``, or ``~/.cache/dessam``."""
    home = os.environ.get(HOME_ENV)
    return Path(home).expanduser() if home else Path.home() / ".cache" / "dessam"
