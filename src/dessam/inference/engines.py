"""Which engine runs a model: PyTorch (`Predictor`) or ONNX Runtime (`OnnxPredictor`).

`--engine onnx` runs the graphs `dessam export` writes. On first use a model is exported into the
user's folder (`$DESSAM_HOME/onnx/`, see `dessam.home`), under a name made of the SHA-256 of the
model file (or, for SAM alone, of its weights) and the export's format version, so that a changed
file is exported again and the bundled models, which live in a read-only place, need nothing
written beside them. Only that first export imports torch.

`--engine auto` (the default) is ONNX Runtime on a CPU when the ONNX extra is installed
(`pip install "dessam[onnx]"`), and PyTorch otherwise (no extra, or a CUDA machine): with the
graphs in the cache, a command starts without importing torch (see docs/onnx.md for the
measurements behind this choice).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional

from ..config.runtime import Runtime
from ..digests import file_sha256
from ..errors import DessamError
from ..home import dessam_home
from .onnx_predictor import INSTALL_HINT, MANIFEST_NAME, OnnxPredictor

EXPORT_VERSION = 3  # bump when the graphs or the manifest change (2: a nucleus-size graph, 3: trimmed inputs); older exports are made again


def onnx_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def cuda_visible() -> bool:
    """Whether this machine has an NVIDIA driver (checked without importing torch)."""
    return Path("/proc/driver/nvidia/version").exists()


def choose_engine(runtime: Runtime) -> str:
    """"torch" or "onnx" for the runtime's engine and device (see the module docstring)."""
    engine, device = runtime.engine, str(runtime.device)
    if engine == "onnx" and not onnx_installed():
        raise DessamError(f"--engine onnx needs ONNX Runtime: {INSTALL_HINT}")
    if engine != "auto":
        return engine
    on_cpu = device == "cpu" or (device == "auto" and not cuda_visible())
    return "onnx" if on_cpu and onnx_installed() else "torch"


def export_folder(digest: str, image_size: Optional[int] = None) -> Path:
    """Where the graphs of the weights of SHA-256 `digest` (at `image_size`, None: their own) live."""
    size = "" if image_size is None else f"-{int(image_size)}px"
    return dessam_home() / "onnx" / f"v{EXPORT_VERSION}-{digest[:24]}{size}"


def _announce(folder: Path, what: str, progress: bool) -> None:
    if progress:
        print(f"dessam: exporting {what} to ONNX, once (into {folder})", file=sys.stderr)


def onnx_model(model, sam_checkpoint=None, image_size: Optional[int] = None, threads: Optional[int] = None,
               precision: str = "fp32", cuda: bool = False, input_scale: Optional[float] = None,
               progress: bool = True) -> OnnxPredictor:
    """A model file (or a bundled model's name) run by ONNX Runtime, exported first if needed."""
    from ..models.bundled import resolve_model

    path = resolve_model(model)
    if not path.is_file():
        raise DessamError(f"{path}: model file not found; pass a model.pt written by `dessam train` or a bundled "
                          "model's name (pretrained, pretrained-permissive)")
    folder = export_folder(file_sha256(path), image_size)
    if not (folder / MANIFEST_NAME).is_file():
        from .export import export_model
        from .loading import load_model

        _announce(folder, path.name, progress)
        export_model(load_model(path, "cpu", sam_checkpoint, image_size), folder, model_path=path)
    predictor = OnnxPredictor(folder, threads=threads, precision=precision, cuda=cuda, path=path)
    if input_scale is not None:
        predictor.scale = replace(predictor.scale, input_scale=input_scale)
    return predictor


def onnx_teacher(sam_name: str, sam_checkpoint=None, image_size: Optional[int] = None, threads: Optional[int] = None,
                 precision: str = "fp32", cuda: bool = False, input_scale: float = 1.0,
                 progress: bool = True) -> OnnxPredictor:
    """SAM alone (as `load_teacher` gives it, to segment given boxes) run by ONNX Runtime."""
    digest = _teacher_digest(sam_name, sam_checkpoint)
    folder = export_folder(digest, image_size)
    if not (folder / MANIFEST_NAME).is_file():
        from .export import export_model
        from .loading import load_teacher

        _announce(folder, f"SAM {sam_name}", progress)
        export_model(load_teacher(sam_name, sam_checkpoint, "cpu", image_size), folder)
    predictor = OnnxPredictor(folder, threads=threads, precision=precision, cuda=cuda)
    predictor.scale = replace(predictor.scale, mode="fixed", input_scale=input_scale)
    return predictor


def _teacher_digest(sam_name: str, sam_checkpoint=None) -> str:
    """The SHA-256 of SAM `sam_name`'s weights: its file's, or (the official ones found in the cache,
    `tiny`) that of the loaded weights."""
    from ..models.bundled import TEACHER_FILES

    for candidate in (sam_checkpoint, TEACHER_FILES.get(sam_name), sam_name):
        if candidate is not None and Path(str(candidate)).is_file():
            return file_sha256(candidate)
    from ..models.checkpoints import weights_sha256
    from .loading import load_teacher

    return weights_sha256(load_teacher(sam_name, None, "cpu").model.sam)


def cached_manifest(path) -> Optional[dict]:
    """The manifest of the ONNX export of the model file at `path`, when one is in the cache."""
    manifest = export_folder(file_sha256(path)) / MANIFEST_NAME
    try:
        return json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else None
    except (OSError, ValueError):
        return None


def model_file_terms(path):
    """The terms (`dessam.licences.Terms`) of a model file: from its ONNX export's manifest when one
    is in the cache (without importing torch), else read from the file."""
    from ..licences import Terms

    terms = ((cached_manifest(path) or {}).get("model") or {}).get("terms")
    if terms:
        return Terms.from_dict(terms)
    from ..models.model_file import read_model_file
    from ..models.weights_terms import model_terms

    return model_terms(read_model_file(path))


def model_input_size(path) -> int:
    """The input size of a model file: from its ONNX export's manifest when one is in the cache,
    else read from the file."""
    manifest = cached_manifest(path)
    if manifest is not None:
        return int(manifest["image_size"])
    from ..models.model_file import read_model_file

    return int(read_model_file(path).config.model.image_size)


def load_predictor(model, runtime: Optional[Runtime] = None, sam_checkpoint=None, image_size: Optional[int] = None,
                   input_scale: Optional[float] = None, progress: bool = True, settings=None):
    """A model file (or a bundled model's name) on the engine `runtime` asks for (default: `Runtime()`):
    `onnx_model`, or `load_model` (PyTorch) with `settings` (default: `runtime.torch_settings()`)."""
    runtime = runtime or Runtime()
    if choose_engine(runtime) == "onnx":
        return onnx_model(model, sam_checkpoint, image_size, runtime.threads, runtime.onnx_precision(),
                          cuda=runtime.cuda, input_scale=input_scale, progress=progress)
    from .loading import load_model

    settings = settings or runtime.torch_settings()
    use_threads(runtime)
    return load_model(model, device=runtime.device, sam_checkpoint=sam_checkpoint, image_size=image_size,
                      settings=settings, input_scale=input_scale)


def load_teacher_predictor(sam_name: str, runtime: Optional[Runtime] = None, sam_checkpoint=None,
                           image_size: Optional[int] = None, input_scale: float = 1.0, progress: bool = True):
    """SAM `sam_name` alone (to segment given boxes) on the engine `runtime` asks for:
    `onnx_teacher`, or `load_teacher` (PyTorch)."""
    runtime = runtime or Runtime()
    if choose_engine(runtime) == "onnx":
        return onnx_teacher(sam_name, sam_checkpoint, image_size, runtime.threads, runtime.onnx_precision(),
                            cuda=runtime.cuda, input_scale=input_scale, progress=progress)
    from .loading import load_teacher

    settings = runtime.torch_settings()
    use_threads(runtime)
    return load_teacher(sam_name, sam_checkpoint, device=runtime.device, image_size=image_size, settings=settings,
                        input_scale=input_scale)


def use_threads(runtime: Runtime) -> None:
    """PyTorch's CPU threads as `runtime.threads` says (None: left as they are, one per core)."""
    if runtime.threads is not None:
        import torch

        torch.set_num_threads(int(runtime.threads))
