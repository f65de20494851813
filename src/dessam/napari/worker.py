"""dessam's work off the viewer's thread: progress in the viewer, Cancel or Stop, and the outcome.

A `Job` runs `work(job)` in a napari worker thread, so the viewer never freezes. The pipeline
calls back after each window (`job.window`) or training iteration (`job.iteration`); those calls
send the progress to the viewer's thread through a Qt signal and see whether the user asked to
stop: prediction then raises `Cancelled` out of the pipeline at its next window, training returns
True and saves what it has. A user mistake (`DessamError`) comes back as its one-line message.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal

from ..errors import DessamError


class Cancelled(Exception):
    """The user pressed Cancel; raised inside the work at its next step."""


@dataclass
class Outcome:
    value: Any = None
    error: Optional[str] = None   # a DessamError's message
    cancelled: bool = False


class _Relay(QObject):
    """Lives in the viewer's thread: a signal emitted from the worker is delivered there."""

    progress = Signal(int, int, float)   # done, total, loss (NaN when there is none)


class Job:
    def __init__(self, work: Callable[["Job"], Any], on_progress: Callable[[int, int, float], None],
                 on_done: Callable[[Outcome], None], on_crash: Callable[[BaseException], None]):
        self._stop = threading.Event()
        self._relay = _Relay()
        self._relay.progress.connect(on_progress)
        self.worker = create_worker(self._run, work, _start_thread=False)
        self.worker.returned.connect(on_done)
        self.worker.errored.connect(on_crash)   # a bug, not a user mistake: napari shows it too
        self.worker.start()

    def _run(self, work) -> Outcome:
        try:
            return Outcome(value=work(self))
        except Cancelled:
            return Outcome(cancelled=True)
        except DessamError as exc:
            return Outcome(error=str(exc))

    def stop(self) -> None:
        """Ask the work to stop at its next window or iteration."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def check(self) -> None:
        """Raise `Cancelled` when the user asked to stop."""
        if self._stop.is_set():
            raise Cancelled()

    def window(self, done: int, total: int) -> None:
        """Prediction's per-window callback: report progress, raise `Cancelled` when asked to stop."""
        self._relay.progress.emit(int(done), int(total), math.nan)
        self.check()

    def iteration(self, iteration: int, total: int, loss: float) -> bool:
        """Training's per-iteration callback: report the loss; True when asked to stop."""
        self._relay.progress.emit(int(iteration), int(total), float(loss))
        return self._stop.is_set()
