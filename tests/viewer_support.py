"""Driving the plugin's widgets as a person does: docked in a real viewer, buttons clicked."""

from __future__ import annotations

TIMEOUT_MS = 120_000


def dock(viewer, widget):
    viewer.window.add_dock_widget(widget)
    return widget


def click(button) -> None:
    button.native.click()


def run(qtbot, widget, timeout: int = TIMEOUT_MS) -> str:
    """Click the widget's run button and wait until its work has ended; its status line."""
    click(widget.run_button)
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)
    return widget.status.value


def stop_at_first_progress(widget) -> list:
    """Click Cancel (Stop) as soon as the progress bar first moves; the (value, max) it showed,
    as it moves, are collected in the returned list."""
    shown = []

    def moved(value):
        shown.append((value, widget.progress.max))
        if value >= 1 and widget.stop_button.enabled:
            click(widget.stop_button)

    widget.progress.changed.connect(moved)
    return shown
