"""Reading checkpoints safely, and the digests that say which weights a model was trained on."""

from __future__ import annotations

import hashlib
import io
import pickle
import warnings
from pathlib import Path

import torch

from ..digests import file_sha256  # noqa: F401 (imported from here by the models)
from ..errors import DessamError


def safe_torch_load(path: str | Path):
    """`torch.load` restricted to tensors and plain containers; refuses anything that runs code."""
    path = Path(path)
    if not path.is_file():
        raise DessamError(f"{path}: file not found; check the path")
    try:
        with warnings.catch_warnings():  # torch's notice about other pickle protocols is not for users
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _load_failure_detail(exc)
        if "GLOBAL" not in detail.upper():  # not a forbidden object: a damaged or non-checkpoint file
            raise DessamError(f"{path}: not a readable PyTorch checkpoint ({detail}); re-download or re-create it") from None
        raise DessamError(
            f"{path}: refused to load: the file holds Python objects other than tensors "
            f"(only weights-only checkpoints are accepted; a file that runs code on load is never opened): {detail}"
        ) from None
    except Exception as exc:  # damaged bytes make the unpickler fail in many ways (KeyError, IndexError, ...)
        raise DessamError(
            f"{path}: not a readable PyTorch checkpoint ({_load_failure_detail(exc)}); re-download or re-create it"
        ) from None


def _load_failure_detail(exc: BaseException) -> str:
    """The sentence of torch's error that says what is wrong, without its advice to turn off weights_only."""
    lines = [line.split("WeightsUnpickler error:")[-1].strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    for marker in ("GLOBAL", "Unsupported"):
        for line in lines:
            if marker in line:
                return line.split(". ")[0][:160]
    return (lines[0] if lines else type(exc).__name__)[:160]


def save_torch_atomic(obj, path: str | Path) -> None:
    """`torch.save` to `path` atomically, in bytes that depend on `obj` only: torch names the records
    of its archive after the file it writes to, so saving straight to a temporary file would make the
    same weights hash differently each time (and a teacher's SHA-256 is how models name it)."""
    from ..atomic import write_bytes_atomic

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def read_sam_state_dict(path: str | Path) -> dict:
    """The SAM state dict inside `path` (an official .pth, or a dessam teacher file)."""
    obj = safe_torch_load(path)
    if isinstance(obj, dict) and obj.get("format") == "dessam-sam":
        obj = obj["state_dict"]
    if isinstance(obj, dict) and obj.get("format") == "dessam-model":
        raise DessamError(f"{path}: this is a trained dessam model, not a SAM checkpoint; pass it as --model")
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DessamError(f"{path}: not a SAM checkpoint (expected a state dict of tensors)")
    return obj


def weights_sha256(module: torch.nn.Module) -> str:
    """A digest of a module's weights (used where there is no checkpoint file, e.g. ``tiny``)."""
    return state_sha256(module.state_dict())


def state_sha256(state: dict) -> str:
    """A digest of a state dict: names and raw bytes of its tensors, in name order."""
    digest = hashlib.sha256()
    for key, value in sorted(state.items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
