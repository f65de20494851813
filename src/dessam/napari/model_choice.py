"""Which model a widget runs: a bundled DES-SAM model, any model.pt, or (to draw masks of given
boxes) the frozen SAM alone, as `dessam label --sam` uses it.

The choice is read in the viewer's thread (`ModelChoice.spec`) and loaded in the worker
(`load`), where a model once loaded is kept for the next run.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from magicgui.widgets import ComboBox, Container, FileEdit, Label

from ..errors import DessamError
from ..models.bundled import bundled_models
from ..models.default_teacher import TEACHER_FILES
from ..models.fetch import find_sam_checkpoint, sam_file_name
from ..models.sam import OFFICIAL_VARIANTS

MODEL_FILE = "a model.pt file"
TEACHER = "SAM alone: "    # + a SAM name


@dataclass(frozen=True)
class ModelSpec:
    kind: str                     # "model" (a DES-SAM model file) or "teacher" (SAM alone)
    name: str                     # the file's path, or the SAM's name

    @property
    def use_token(self) -> bool:
        """The learned prompt token belongs to a trained model; SAM alone has none."""
        return self.kind == "model"


def model_choices(teachers: bool) -> list:
    """The choices of the model box: SAM alone (the bundled one and the official ones already
    fetched) when `teachers`, the bundled DES-SAM models, then a file of one's own."""
    choices = []
    if teachers:
        choices += [TEACHER + name for name, path in TEACHER_FILES.items() if path.is_file()]
        choices += [TEACHER + name for name in OFFICIAL_VARIANTS if find_sam_checkpoint(sam_file_name(name))]
    return choices + [f"bundled: {name}" for name in bundled_models()] + [MODEL_FILE]


class ModelChoice(Container):
    """A model box, for `MODEL_FILE` the file to load, and a line naming non-commercial weights."""

    def __init__(self, teachers: bool = False):
        self.source = ComboBox(label="model", choices=model_choices(teachers),
                               tooltip="SAM alone draws the mask of each box; a trained model also finds the nuclei")
        self.file = FileEdit(label="model file", mode="r", filter="*.pt",
                             tooltip="a model.pt written by `dessam train` or by Train from boxes")
        self.licence = Label(value="")
        super().__init__(widgets=[self.source, self.file, self.licence], labels=True)
        self.margins = (0, 0, 0, 0)
        self.licence.native.setWordWrap(True)
        self.source.changed.connect(self._show_file)
        self.file.changed.connect(self._show_licence)
        self._show_file()

    def _show_file(self, *_) -> None:
        self.file.visible = self.source.value == MODEL_FILE
        self._show_licence()

    def _show_licence(self, *_) -> None:
        try:
            note = licence_note(self.spec())
        except DessamError:   # no file chosen yet, or not a model file: said when the work starts
            note = ""
        self.licence.value = note[2:]
        self.licence.visible = bool(note)

    def spec(self) -> ModelSpec:
        """What to load; a file chosen but not given is refused."""
        value = self.source.value
        if value.startswith(TEACHER):
            return ModelSpec("teacher", value[len(TEACHER):])
        if value != MODEL_FILE:
            return ModelSpec("model", str(bundled_models()[value.split(": ", 1)[1]]))
        text = self.file.line_edit.value.strip()
        if not text:
            raise DessamError("no model file chosen: pick a model.pt (written by `dessam train` or Train from boxes) "
                              "in 'model file'")
        path = Path(text).expanduser()
        if not path.is_file():
            raise DessamError(f"{path}: model file not found; pick a model.pt written by `dessam train` "
                              "or Train from boxes")
        return ModelSpec("model", str(path))


def licence_note(spec: ModelSpec) -> str:
    """"; " + the one line naming non-commercial weights and the permissive choice, or "" (read in the worker)."""
    from ..models.model_file import read_model_file
    from ..models.weights_terms import model_terms, sam_terms

    if spec.kind == "model":
        terms, what, alternative = model_terms(read_model_file(spec.name)), "the model", "bundled: pretrained-permissive"
    else:
        terms, what, alternative = sam_terms(spec.name), f"SAM {spec.name}", TEACHER + "default-permissive"
    return f"; {terms.notice(what, alternative)}" if terms.non_commercial else ""


_loaded: dict = {}
_lock = threading.Lock()


def load(spec: ModelSpec, engine: str = "auto"):
    """The predictor of `spec` on `engine` (`dessam.inference.engines`: by default ONNX Runtime on a
    CPU when the ONNX extra is installed, else PyTorch), kept for the next run; a model file is
    loaded again when it has changed on disk."""
    from ..config.runtime import Runtime
    from ..inference.engines import choose_engine, load_predictor, load_teacher_predictor

    stamp = None
    if spec.kind == "model":
        stat = Path(spec.name).stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
    runtime = Runtime(engine=choose_engine(Runtime(engine=engine)))  # the engine decided once, part of the key
    key = (spec, stamp, runtime.engine)
    with _lock:
        if key not in _loaded:
            _loaded.clear()  # one model in memory at a time
            load_chosen = load_predictor if spec.kind == "model" else load_teacher_predictor
            _loaded[key] = load_chosen(spec.name, runtime, progress=False)
        return _loaded[key]

