"""Reading a user's YAML file with one-line errors that name it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import DessamError


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed content of the YAML file at `path` (`what` names it in errors, e.g. "config file")."""
    path = Path(path)
    if not path.is_file():
        raise DessamError(f"{path}: {what} not found; check the path")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DessamError(f"{path}: invalid YAML ({str(exc).splitlines()[0]}); fix the syntax") from None
