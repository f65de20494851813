"""What the three widgets share: layer boxes that follow the viewer, a run and a stop button, a
progress bar and a status line, and one `Job` at a time.

A widget reads its inputs in the viewer's thread (`prepare`, which returns the work; a
`DessamError` there is shown in the status line and nothing starts), the work runs in a worker
(`dessam.napari.worker`), and `finish` puts its result into the viewer.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional

import napari
from magicgui.widgets import ComboBox, Container, Label, ProgressBar, PushButton

from ..errors import DessamError
from .worker import Job, Outcome


def is_layer(layer, kind: str) -> bool:
    """Whether `layer` is a napari layer of `kind` ("Image", "Shapes", "Labels")."""
    return isinstance(layer, getattr(napari.layers, kind))


def find_layer(viewer, name: str, kind: str):
    """The viewer's layer of `kind` called `name`, or None."""
    return next((layer for layer in viewer.layers if layer.name == name and is_layer(layer, kind)), None)


def layer_box(viewer, label: str, kind: str, optional: bool = False, tooltip: str = "") -> ComboBox:
    """A box listing the viewer's layers of `kind` ("Image", "Shapes", "Labels"), with "none" first
    when `optional`; its choices follow the layers as they come and go (`JobWidget`)."""
    def choices(_widget) -> list:
        return [(layer.name, layer) for layer in viewer.layers if is_layer(layer, kind)]

    return ComboBox(label=label, choices=choices, nullable=optional, tooltip=tooltip)


class JobWidget(Container):
    run_text = "Run"
    stop_text = "Cancel"
    stopped_message = "cancelled: nothing was added"

    def __init__(self, viewer, widgets: list):
        self.viewer = viewer
        self.run_button = PushButton(text=self.run_text)
        self.stop_button = PushButton(text=self.stop_text, enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.status = Label(value="")
        self.job: Optional[Job] = None
        self._started = 0.0
        buttons = Container(widgets=[self.run_button, self.stop_button], layout="horizontal", labels=False)
        buttons.margins = (0, 0, 0, 0)
        super().__init__(widgets=[*widgets, buttons, self.progress, self.status])
        self.status.native.setWordWrap(True)
        self.run_button.changed.connect(self.start)
        self.stop_button.changed.connect(self.stop)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed, viewer.layers.events.moved):
            event.connect(self._layers_changed)

    # ----- layers ------------------------------------------------------------------------------
    def _layers_changed(self, *_) -> None:
        self.reset_choices()

    # ----- the job -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.job is not None

    def prepare(self) -> Callable[[Job], object]:
        """Read the inputs (viewer's thread); return the work, run in the worker with the job."""
        raise NotImplementedError

    def finish(self, value) -> str:
        """Put the work's result into the viewer; the status line to show."""
        raise NotImplementedError

    def start(self, *_) -> None:
        if self.running:
            return
        try:
            work = self.prepare()
        except DessamError as exc:
            self.status.value = str(exc)
            return
        self.run_button.enabled, self.stop_button.enabled = False, True
        self.progress.max, self.progress.value = 1, 0
        self.status.value = "working..."
        self._started = time.monotonic()
        self.job = Job(work, self.on_progress, self._done, self._crashed)

    def stop(self, *_) -> None:
        if self.running:
            self.job.stop()
            self.stop_button.enabled = False
            self.status.value = "stopping..."

    def on_progress(self, done: int, total: int, loss: float) -> None:
        if self.job is not None and not self.job.stop_requested:
            self.status.value = self.progress_message(done, total, loss)
        self.progress.max, self.progress.value = max(total, 1), min(done, max(total, 1))

    def progress_message(self, done: int, total: int, loss: float) -> str:
        return f"window {done} of {total}" if math.isnan(loss) else f"iteration {done} of {total}, loss {loss:.4f}"

    @property
    def seconds(self) -> float:
        return time.monotonic() - self._started

    def _idle(self) -> None:
        self.job = None
        self.run_button.enabled, self.stop_button.enabled = True, False

    def _done(self, outcome: Outcome) -> None:
        self._idle()
        if outcome.cancelled:
            self.status.value = self.stopped_message
        elif outcome.error is not None:
            self.status.value = outcome.error
        else:
            try:
                self.status.value = self.finish(outcome.value)
            except DessamError as exc:
                self.status.value = str(exc)

    def _crashed(self, exc: BaseException) -> None:
        self._idle()
        self.status.value = f"failed: {type(exc).__name__}: {exc}"
