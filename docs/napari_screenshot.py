"""The README's napari picture: a real napari window, the Segment widget docked, its labels on an image.

    .venv/bin/python docs/napari_screenshot.py --image IMAGE.png [--model pretrained|RUN/model.pt] [--out docs/napari_segment.png]

Opens the image in napari, docks dessam's Segment widget as napari's Plugins menu does, clicks
Segment with the given model and, once the labels are in, saves a screenshot of the whole window.
Without a display it starts Xvfb (`make install` as root installs it). The README gives the command
that made its picture; the image must be one dessam may redistribute (docs/licences.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def end_with_parent() -> None:
    """In the Xvfb child (Linux): be sent SIGTERM when this process dies, even when it crashes."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_display() -> subprocess.Popen | None:
    """Xvfb on a free display when there is no display; None when there is one."""
    os.environ["QT_QPA_PLATFORM"] = "xcb"   # napari draws with OpenGL, which Qt's offscreen platform lacks
    if os.environ.get("DISPLAY"):
        return None
    if shutil.which("Xvfb") is None:
        sys.exit("no display and no Xvfb: run `make install` as root, or `sudo apt-get install xvfb`")
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1920x1200x24", "-nolisten", "tcp"],
                              pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              preexec_fn=end_with_parent)
    os.close(write)
    with os.fdopen(read) as display:
        os.environ["DISPLAY"] = ":" + display.readline().strip()
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pretrained", help="a bundled model's name (default: pretrained) or a model.pt")
    parser.add_argument("--image", required=True, help="the image to segment (e.g. an H&E tile)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("napari_segment.png")))
    parser.add_argument("--size", default="1500x900", help="window size, W x H pixels")
    args = parser.parse_args()
    server = start_display()
    try:
        import napari
        from qtpy.QtWidgets import QApplication

        from PIL import Image

        from dessam.atomic import atomic_path
        from dessam.data.images import read_image
        from dessam.napari.model_choice import MODEL_FILE

        viewer = napari.Viewer(title="napari: dessam")
        width, height = (int(v) for v in args.size.split("x"))
        viewer.window._qt_window.resize(width, height)
        image = viewer.add_image(read_image(args.image), name=Path(args.image).stem)
        _, widget = viewer.window.add_plugin_dock_widget("dessam", "Segment")
        widget.image.value = image
        bundled = f"bundled: {args.model}"
        if bundled in widget.model.source.choices:
            widget.model.source.value = bundled
        else:
            widget.model.source.value = MODEL_FILE
            widget.model.file.value = args.model
        widget.run_button.native.click()
        while widget.running:
            QApplication.processEvents()
            time.sleep(0.05)
        print(widget.status.value)
        if f"{image.name} nuclei" not in viewer.layers:
            return 1
        viewer.layers[f"{image.name} nuclei"].opacity = 0.5
        viewer.layers.selection.active = viewer.layers[f"{image.name} nuclei"]
        viewer.reset_view()
        for _ in range(20):
            QApplication.processEvents()
            time.sleep(0.05)
        picture = viewer.screenshot(canvas_only=False)
        with atomic_path(args.out) as tmp:
            Image.fromarray(picture[..., :3]).save(tmp, format="PNG", optimize=True)
        print(f"screenshot written to {args.out}")
        viewer.close()
        return 0
    finally:
        if server is not None:
            server.terminate()


if __name__ == "__main__":
    raise SystemExit(main())
