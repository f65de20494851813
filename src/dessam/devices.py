"""Which torch device a command runs on."""

from __future__ import annotations

import torch

from .errors import DessamError


def resolve_device(name) -> torch.device:
    """`auto` (CUDA when there is one), `cpu` or `cuda[:N]` (or a torch.device); a one-line error otherwise."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DessamError("--device cuda: no CUDA device is available here; use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise DessamError(f"--device {name}: use cpu, cuda or auto")
    return torch.device(name)
