"""The plugin as napari finds it, and the rest of dessam without it."""

import subprocess
import sys

import numpy as np
import pytest

npe2 = pytest.importorskip("npe2", reason="napari is not installed: pip install -e '.[napari]' (make install does)")

from viewer_support import run  # noqa: E402


def test_the_rest_of_dessam_never_imports_napari_or_qt():
    code = ("import importlib, pkgutil, sys, dessam\n"
            "for module in pkgutil.walk_packages(dessam.__path__, 'dessam.'):\n"
            "    if not module.name.startswith(('dessam.napari', 'dessam.__main__')):\n"
            "        importlib.import_module(module.name)\n"
            "print(sorted({name.split('.')[0] for name in sys.modules} & "
            "{'napari', 'npe2', 'magicgui', 'qtpy', 'superqt', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'vispy'}))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert found == "[]"


def test_napari_finds_the_manifest_and_every_command_imports():
    from npe2.manifest.utils import import_python_name

    manifest = npe2.PluginManifest.from_distribution("dessam")
    assert manifest.name == "dessam"
    names = {command.id: command.python_name for command in manifest.contributions.commands}
    assert [w.command for w in manifest.contributions.widgets] == ["dessam.segment", "dessam.masks_from_boxes",
                                                                   "dessam.train"]
    for python_name in names.values():
        assert callable(import_python_name(python_name))


def test_from_the_plugins_menu_sample_boxes_become_masks(viewer, qtbot):
    """As a new user: File > Open Sample, Plugins > dessam > Masks from boxes, click Draw masks."""
    image, boxes = viewer.open_sample("dessam", "pap_field")
    docked = {name: viewer.window.add_plugin_dock_widget("dessam", name)[1]
              for name in ("Segment", "Masks from boxes", "Train from boxes")}
    assert docked["Segment"].image.value.name == image.name
    assert docked["Train from boxes"].rows[0].boxes.value.name == boxes.name
    widget = docked["Masks from boxes"]
    assert (widget.image.value.name, widget.boxes.value.name) == (image.name, boxes.name)
    assert run(qtbot, widget).startswith(f"{len(boxes.data)} masks in '{image.name} masks'")
    masks = viewer.layers[f"{image.name} masks"]
    assert len(masks.features) == len(boxes.data) and (np.unique(masks.data) > 0).sum() >= 0.9 * len(boxes.data)


def test_the_plugin_loads_pytorch_after_the_viewer_without_crashing(viewer_display):
    """napari started first (as a user does), then the plugin: its PyTorch must live beside Mesa's
    OpenGL, which loads its own LLVM (a new process: here PyTorch is imported already)."""
    code = ("import napari, sys\n"
            "viewer = napari.Viewer()\n"
            "viewer.open_sample('dessam', 'pap_field')\n"
            "widget = viewer.window.add_plugin_dock_widget('dessam', 'Segment')[1]\n"
            "import torchvision.ops\n"
            "print('torch' in sys.modules, len(viewer.layers))\n"
            "viewer.close()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True", "2"]
