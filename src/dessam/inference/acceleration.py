"""Running a module faster without changing it: autocast to a lower precision, torch.compile."""

from __future__ import annotations

import contextlib
import warnings
import weakref
from typing import Optional

import torch

from ..config.runtime import InferenceSettings

def autocast_for(settings: InferenceSettings, device, part: str = "encoder"):
    """A context manager: autocast `part` ("encoder" or "decoder") to the settings' dtype on `device`,
    or nothing for fp32."""
    dtype = settings.autocast_dtype(device, part)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


_compiled = weakref.WeakKeyDictionary()  # module -> its _CompiledOrEager wrapper (compile once)
_warned = [False]


def _warn_once(message: str) -> None:
    if not _warned[0]:
        _warned[0] = True
        warnings.warn(message, RuntimeWarning, stacklevel=3)


class _CompiledOrEager:
    """Calls the compiled module; if compiling fails (it happens at the first call), runs eagerly."""

    def __init__(self, module: torch.nn.Module, compiled):
        self.module = module
        self.compiled = compiled

    def __call__(self, *args, **kwargs):
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as exc:  # inductor/dynamo failures have many types
                _warn_once(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:120]}); running without it")
                self.compiled = None
        return self.module(*args, **kwargs)


def maybe_compile(module: torch.nn.Module, settings: InferenceSettings, device=None, n_images: Optional[int] = None):
    """`module`, compiled when the settings ask for it and torch.compile exists and works.

    The module itself is never modified (its state dict keeps its keys); a compiled wrapper is
    made once per module and reused. Falls back to the module, with one warning, when torch.compile
    is missing or fails.
    """
    if device is None:
        device = next(module.parameters()).device
    if not settings.compiles(device, n_images):
        return module
    wrapper = _compiled.get(module)
    if wrapper is not None:
        return wrapper
    compile_fn = getattr(torch, "compile", None)
    if compile_fn is None:
        _warn_once("torch.compile is not available in this torch; running without it")
        return module
    try:
        compiled = compile_fn(module)
    except Exception as exc:
        _warn_once(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:120]}); running without it")
        return module
    wrapper = _CompiledOrEager(module, compiled)
    _compiled[module] = wrapper
    return wrapper
